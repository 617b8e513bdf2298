"""pw_cc_grpc_library: C++ protobuf + gRPC code from a .proto, offline.

Why: Bazel's native proto_library/cc_proto_library need @com_google_protobuf
(sources to download and build). Debian already ships protoc,
grpc_cpp_plugin and the runtime libraries, so a genrule runs those instead.

    pw_cc_grpc_library(
        name = "control_plane_cc_grpc",
        srcs = ["control_plane.proto"],
        deps = [],  # other pw_cc_grpc_library targets whose .proto we import
    )

For proto/x.proto this generates x.pb.{h,cc}, x.grpc.pb.{h,cc} and
x_mock.grpc.pb.h (gMock stubs; include it only from tests that depend on
//bazel/third_party:gmock) and a cc_library `name` over them, so that
`#include "proto/x.pb.h"` / `"proto/x.grpc.pb.h"` works. Imports are
resolved relative to the workspace root (`import "proto/other.proto";`);
the well-known types (google/protobuf/*.proto) come from /usr/include.
Only for .proto files in this workspace (not in external repositories).
"""

_PROTOC = "/usr/bin/protoc"
_GRPC_PLUGIN = "/usr/bin/grpc_cpp_plugin"

def pw_cc_grpc_library(name, srcs, deps = [], visibility = None, testonly = False):
    pkg = native.package_name()
    outs = []
    paths = []
    for src in srcs:
        if not src.endswith(".proto"):
            fail("pw_cc_grpc_library: srcs must be .proto files, got " + src)
        base = src[:-len(".proto")]
        outs.extend([
            base + ".pb.h",
            base + ".pb.cc",
            base + ".grpc.pb.h",
            base + ".grpc.pb.cc",
            base + "_mock.grpc.pb.h",
        ])
        paths.append((pkg + "/" + src) if pkg else src)

    # The .proto files of this target, for dependents that import them.
    native.filegroup(
        name = name + "_protos",
        srcs = srcs + [d + "_protos" for d in deps],
        visibility = visibility,
        testonly = testonly,
    )

    native.genrule(
        name = name + "_gen",
        srcs = [name + "_protos"],
        outs = outs,
        cmd = " ".join([
            _PROTOC,
            "--proto_path=.",
            "--proto_path=/usr/include",
            "--cpp_out=$(GENDIR)",
            "--grpc_out=generate_mock_code=true:$(GENDIR)",
            "--plugin=protoc-gen-grpc=" + _GRPC_PLUGIN,
        ] + paths),
        message = "protoc + grpc_cpp_plugin " + " ".join(paths),
        testonly = testonly,
        visibility = ["//visibility:private"],
    )

    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//bazel/third_party:grpcpp"],
        visibility = visibility,
        testonly = testonly,
    )
