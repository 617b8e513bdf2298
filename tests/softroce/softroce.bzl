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

Example (tests/softroce/BUILD, the one suite CI runs):

    load("//tests/softroce:softroce.bzl", "softroce_test")

    softroce_test(
        name = "verbs_suite_vm_test",
        steps = {
            "perftest": "$(rootpath :smoke.sh)",
            "transport_verbs": "$(rootpath //tests/transport:transport_test) --gtest_filter=*/Verbs",
        },
        data = [":smoke.sh", "//tests/transport:transport_test"],
    )

One VM boot (~10-25 s plus the steps) runs every step, in order; all run
even if one fails, each is reported by name (BEGIN/END lines, then one
summary line per step), and the test fails with the first failing step's
status, or with 125 if the VM stopped without reporting (naming the step it
was in). The test is tagged local (the VM needs the real build tree and /dev
paths, no sandbox), exclusive (TCG wants both cores) and softroce;
PAGEWIRE_SKIP_VM=1 (--test_env) makes it a passing SKIP.
"""

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

def _sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"

def softroce_test(
        name,
        steps,
        data = [],
        env = {},
        timeout_s = 1500,
        size = "large",
        tags = [],
        **kwargs):
    """Defines an sh_test running the named `steps` in one soft-RoCE VM.

    Args:
      name: the test's name.
      steps: dict from a step name (letters, digits, _ . -) to the bash
        command line it runs, in order. $(rootpath X) is expanded (X must be
        in `data`); write $$ for a shell $ (Bazel's make-variable rule, as
        in genrules).
      data: the binaries and scripts the steps use.
      env: dict of environment variables for every step in the guest.
      timeout_s: the harness watchdog on the whole VM run. Keep it below
        the test size's Bazel timeout (large: 1800 s), so a wedged VM is
        reported with its kernel log rather than killed by Bazel.
      size: the Bazel test size (default "large").
      tags: extra tags; "local", "exclusive" and "softroce" are always added.
      **kwargs: passed to sh_test (e.g. visibility, flaky).
    """
    if not steps:
        fail("softroce_test(%s): give at least one step" % name)
    driver_args = ["--timeout-s", str(timeout_s)]
    for k in sorted(env.keys()):
        driver_args += ["--env", _sh_quote("%s=%s" % (k, env[k]))]
    for step, line in steps.items():
        if not step or [c for c in step.elems() if c not in _NAME_CHARS]:
            fail("softroce_test(%s): step name '%s': use letters, digits, _ . -" % (name, step))
        driver_args += ["--step", step, _sh_quote(line)]

    all_tags = list(tags)
    for t in ["local", "exclusive", "softroce"]:
        if t not in all_tags:
            all_tags.append(t)

    native.sh_test(
        name = name,
        size = size,
        srcs = ["//tests/softroce:softroce_test.sh"],
        args = driver_args,
        data = data + ["//cluster/softroce:vm-run"],
        tags = all_tags,
        **kwargs
    )
