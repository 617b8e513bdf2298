// Checks that the generated control-plane code builds, links and works:
// protobuf round-trip of a JoinRequest, and a real gRPC call of
// Membership.Join through an in-process server on 127.0.0.1.
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "proto/control_plane.grpc.pb.h"
#include "proto/control_plane.pb.h"

namespace pagewire::proto {
namespace {

constexpr char kCluster[] = "test-cluster";
constexpr char kSecret[] = "s3cret";

// `mac` stands in for a proof of the secret (the fake service below
// compares it, the real coordinator checks an HMAC: credentials.h).
JoinRequest MakeJoinRequest(const std::string& mac) {
  JoinRequest req;
  req.set_cluster_id(kCluster);
  req.mutable_proof()->set_nonce(std::string(32, '\x5a'));
  req.mutable_proof()->set_mac(mac);
  req.set_protocol_version(1);
  req.set_requested_rank(3);
  Endpoint* ep = req.mutable_endpoint();
  ep->set_host("node-3");
  ep->set_control_port(7000);
  VerbsEndpoint* v = ep->mutable_verbs();
  v->set_qp_num(0x1234);
  v->set_gid(std::string("\xfe\x80\0\0\0\0\0\0\x02\x11\x22\xff\xfe\x33\x44\x55", 16));
  v->set_psn(0xabcdef);
  MemoryKey* k = v->add_keys();
  k->set_addr(0x7f0000000000ULL);
  k->set_length(1ULL << 30);
  k->set_rkey(0xdeadbeef);
  k->set_dataspace_id(7);
  return req;
}

TEST(ControlPlaneProto, JoinRequestRoundTrip) {
  const JoinRequest in = MakeJoinRequest(kSecret);
  std::string wire;
  ASSERT_TRUE(in.SerializeToString(&wire));
  ASSERT_FALSE(wire.empty());

  JoinRequest out;
  ASSERT_TRUE(out.ParseFromString(wire));
  EXPECT_EQ(out.cluster_id(), kCluster);
  EXPECT_EQ(out.proof().mac(), kSecret);
  EXPECT_EQ(out.proof().nonce(), std::string(32, '\x5a'));
  EXPECT_EQ(out.protocol_version(), 1u);
  EXPECT_EQ(out.requested_rank(), 3);
  EXPECT_EQ(out.endpoint().host(), "node-3");
  EXPECT_EQ(out.endpoint().control_port(), 7000u);
  ASSERT_EQ(out.endpoint().data_plane_case(), Endpoint::kVerbs);
  EXPECT_FALSE(out.endpoint().has_tcp());
  const VerbsEndpoint& v = out.endpoint().verbs();
  EXPECT_EQ(v.qp_num(), 0x1234u);
  ASSERT_EQ(v.gid().size(), 16u);
  EXPECT_EQ(v.gid(), in.endpoint().verbs().gid());
  EXPECT_EQ(static_cast<unsigned char>(v.gid()[0]), 0xfe);
  EXPECT_EQ(v.psn(), 0xabcdefu);
  ASSERT_EQ(v.keys_size(), 1);
  EXPECT_EQ(v.keys(0).addr(), 0x7f0000000000ULL);
  EXPECT_EQ(v.keys(0).length(), 1ULL << 30);
  EXPECT_EQ(v.keys(0).rkey(), 0xdeadbeefu);
  EXPECT_EQ(v.keys(0).dataspace_id(), 7u);

  // A truncated message must not parse as the same request.
  JoinRequest broken;
  EXPECT_FALSE(broken.ParseFromString(wire.substr(0, wire.size() - 3)) &&
               broken.SerializeAsString() == wire);
}

// A minimal Membership service: admits ranks when cluster and proof match.
class FakeMembership final : public Membership::Service {
 public:
  grpc::Status Join(grpc::ServerContext*, const JoinRequest* req,
                    JoinReply* reply) override {
    if (req->cluster_id() != kCluster) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "cluster_id mismatch: expected '" +
                              std::string(kCluster) + "', got '" +
                              req->cluster_id() + "'");
    }
    if (req->proof().mac() != kSecret) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "secret mismatch: the joining node's secret differs "
                          "from the cluster's");
    }
    reply->set_rank(req->requested_rank() >= 0 ? req->requested_rank() : 0);
    reply->set_nranks(4);
    reply->set_epoch(++epoch_);
    return grpc::Status::OK;
  }

 private:
  uint64_t epoch_ = 0;
};

TEST(ControlPlaneGrpc, JoinChecksSecret) {
  FakeMembership service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  std::unique_ptr<Membership::Stub> stub = Membership::NewStub(channel);

  {
    grpc::ClientContext ctx;
    JoinReply reply;
    grpc::Status st = stub->Join(&ctx, MakeJoinRequest(kSecret), &reply);
    ASSERT_TRUE(st.ok()) << st.error_code() << ": " << st.error_message();
    EXPECT_EQ(reply.rank(), 3);
    EXPECT_EQ(reply.nranks(), 4);
    EXPECT_EQ(reply.epoch(), 1u);
  }
  {
    grpc::ClientContext ctx;
    JoinReply reply;
    grpc::Status st = stub->Join(&ctx, MakeJoinRequest("wrong"), &reply);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(st.error_message().find("secret mismatch"), std::string::npos)
        << st.error_message();
    EXPECT_EQ(reply.rank(), 0);
  }

  server->Shutdown();
}

}  // namespace
}  // namespace pagewire::proto
