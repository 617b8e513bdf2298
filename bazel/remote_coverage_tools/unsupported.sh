#!/bin/sh
# Stand-in for Bazel's downloaded coverage tools (see BUILD).
echo "pagewire: 'bazel coverage' is not supported in the offline build" \
     "(no lcov merger / coverage report generator available)" >&2
exit 1
