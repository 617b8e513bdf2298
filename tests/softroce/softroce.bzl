"""softroce_test: run host-built programs with real verbs, in ONE soft-RoCE VM.

The host kernel has no RDMA stack, so these programs run inside a QEMU guest
(cluster/softroce/vm-run.sh) that has three rxe devices:

    rxe0  pwdummy0  10.77.0.1   single-device tests (loopback inside rxe)
    rxe1  pwveth1   10.77.1.1   }  two "hosts" joined by a veth pair:
    rxe2  pwveth2   10.77.1.2   }  real RoCEv2 packets on a wire

all at RoCE MTU 4096, GID index 1 = the IPv4-mapped RoCEv2 GID. Inside the
guest the programs see PAGEWIRE_VM=1, PAGEWIRE_RXE_GID_INDEX,
PAGEWIRE_RXE_{LOCAL,A,B}_{DEV,IP} and a writable, host-visible
PAGEWIRE_VM_OUT directory.

Example (tests/transport/BUILD):

    load("//tests/softroce:softroce.bzl", "softroce_test")

    cc_test(
        name = "transport_test",
        args = ["--gtest_filter=-*/Verbs"],  # the host has no devices
        ...,
    )

    softroce_test(
        name = "transport_vm_test",
        binaries = [":transport_test", ":verbs_two_host_test"],
        args = {":transport_test": ["--gtest_filter=*/Verbs"]},
        env = {"PAGEWIRE_TEST_DEVICE": "rxe0"},
    )

One VM boot (~10-25 s plus the programs) runs every binary, then every line
of `commands`, in order; all run even if one fails, and the test fails with
the first failing status. The test is tagged local (the VM needs the real
build tree and /dev paths, no sandbox), exclusive (TCG wants both cores) and
softroce; PAGEWIRE_SKIP_VM=1 (--test_env) makes it a passing SKIP.
"""

def _sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"

def softroce_test(
        name,
        binaries = [],
        args = {},
        commands = [],
        env = {},
        data = [],
        timeout_s = 1500,
        size = "large",
        tags = [],
        **kwargs):
    """Defines an sh_test running `binaries` and `commands` in one VM.

    Args:
      name: the test's name.
      binaries: labels of cc_binary/cc_test (or any executable) targets,
        run in this order inside the guest.
      args: dict from a label in `binaries` (spelled the same way) to the
        list of arguments to pass it. $(rootpath) etc. are expanded.
      commands: bash command lines run after the binaries, e.g.
        "$(rootpath :bench.sh) --quick"; $(rootpath) of `data` is expanded.
      env: dict of environment variables for every program in the guest.
      data: extra runfiles (scripts, inputs) the programs need.
      timeout_s: the harness watchdog on the whole VM run. Keep it below
        the test size's Bazel timeout (large: 1800 s), so a wedged VM is
        reported with its kernel log rather than killed by Bazel.
      size: the Bazel test size (default "large").
      tags: extra tags; "local", "exclusive" and "softroce" are always added.
      **kwargs: passed to sh_test (e.g. visibility, flaky).
    """
    for key in args:
        if key not in binaries:
            fail("softroce_test(%s): args key %s is not in binaries" % (name, key))
    if not binaries and not commands:
        fail("softroce_test(%s): give binaries or commands" % name)

    driver_args = ["--timeout-s", str(timeout_s)]
    for k in sorted(env.keys()):
        driver_args += ["--env", _sh_quote("%s=%s" % (k, env[k]))]
    for b in binaries:
        words = ["$(rootpath %s)" % b] + [_sh_quote(a) for a in args.get(b, [])]
        driver_args += ["--run", str(len(words))] + words
    for line in commands:
        driver_args += ["--line", "1", _sh_quote(line)]

    all_tags = list(tags)
    for t in ["local", "exclusive", "softroce"]:
        if t not in all_tags:
            all_tags.append(t)

    native.sh_test(
        name = name,
        size = size,
        srcs = ["//tests/softroce:softroce_test.sh"],
        args = driver_args,
        data = binaries + data + ["//cluster/softroce:vm-run"],
        tags = all_tags,
        **kwargs
    )
