"""layer_sources(): a folder's sources as one filegroup, for the layering
check (//tests:layers_test, scripts/check_layers.sh)."""

def layer_sources(extra = []):
    native.filegroup(
        name = "sources",
        srcs = native.glob(["*.h", "*.cc"] + extra),
        visibility = ["//tests:__pkg__"],
    )
