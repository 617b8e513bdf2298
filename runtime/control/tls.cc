// tls.cc - the control plane's TLS credentials from PEM files.
#include "runtime/control/tls.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pagewire::control {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    const char* variable) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s=%s cannot be read: %s; point it at a PEM file", variable, path,
        std::strerror(errno)));
  }
  std::ostringstream content;
  content << in.rdbuf();
  std::string pem = content.str();
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s=%s is not a PEM file (no -----BEGIN line)", variable, path));
  }
  return pem;
}

struct Pems {
  std::string cert, key, ca;
};

absl::StatusOr<Pems> ReadAll(const TlsFiles& tls) {
  Pems p;
  absl::StatusOr<std::string> cert = ReadPem(tls.cert, "PAGEWIRE_TLS_CERT");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(tls.key, "PAGEWIRE_TLS_KEY");
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> ca = ReadPem(tls.ca, "PAGEWIRE_TLS_CA");
  if (!ca.ok()) return ca.status();
  p.cert = *std::move(cert);
  p.key = *std::move(key);
  p.ca = *std::move(ca);
  return p;
}

}  // namespace

absl::StatusOr<TlsFiles> TlsFiles::FromEnvironment() {
  TlsFiles tls;
  const char* names[] = {"PAGEWIRE_TLS_CERT", "PAGEWIRE_TLS_KEY",
                         "PAGEWIRE_TLS_CA"};
  std::string* fields[] = {&tls.cert, &tls.key, &tls.ca};
  int set = 0;
  std::string missing;
  for (int i = 0; i < 3; ++i) {
    const char* v = std::getenv(names[i]);
    if (v != nullptr && *v != '\0') {
      *fields[i] = v;
      ++set;
    } else {
      absl::StrAppend(&missing, missing.empty() ? "" : ", ", names[i]);
    }
  }
  if (set != 0 && set != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS for the control plane needs PAGEWIRE_TLS_CERT, PAGEWIRE_TLS_KEY "
        "and PAGEWIRE_TLS_CA together; missing: ",
        missing, " (or unset all three for plain TCP)"));
  }
  if (const char* v = std::getenv("PAGEWIRE_TLS_SERVER_NAME")) {
    tls.server_name = v;
  }
  return tls;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsFiles& tls, grpc::ChannelArguments& args) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  absl::StatusOr<Pems> p = ReadAll(tls);
  if (!p.ok()) return p.status();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = p->ca;
  options.pem_private_key = p->key;
  options.pem_cert_chain = p->cert;
  if (!tls.server_name.empty()) {
    args.SetSslTargetNameOverride(tls.server_name);
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  absl::StatusOr<Pems> p = ReadAll(tls);
  if (!p.ok()) return p.status();
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = p->ca;
  options.pem_key_cert_pairs.push_back({p->key, p->cert});
  return grpc::SslServerCredentials(options);
}

}  // namespace pagewire::control
