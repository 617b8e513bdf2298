"""pw_fuzz_test: a libFuzzer target and the test that runs it.

    pw_fuzz_test(name = "x_fuzzer", srcs = ["x_fuzzer.cc"], deps = [...])

makes cc_binary `x_fuzzer` (LLVMFuzzerTestOneInput in srcs) and sh_test
`x_fuzzer_test` over corpus/x_fuzzer/. Built with --config=fuzz (clang,
.bazelrc) the binary is a libFuzzer binary and the test replays the corpus
and fuzzes for `seconds`; built otherwise (gcc) it links replay_main.cc and
the test replays the corpus. See run_fuzzer.sh.
"""

def pw_fuzz_test(name, srcs, deps = [], seconds = 20, size = "small"):
    native.cc_binary(
        name = name,
        testonly = True,
        srcs = srcs,
        deps = deps + select({
            ":fuzz_build": [],
            "//conditions:default": [":replay_main"],
        }),
        linkopts = select({
            ":fuzz_build": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
    )
    native.sh_test(
        name = name + "_test",
        size = size,
        srcs = ["run_fuzzer.sh"],
        args = [
            name,
            "$(location :%s)" % name,
            "tests/fuzz/corpus/" + name,
            str(seconds),
            "$(location :fuzz_mode)",
        ],
        data = [
            ":" + name,
            ":fuzz_mode",
        ] + native.glob(["corpus/%s/*" % name]),
        tags = ["fuzz"],
    )
