#!/usr/bin/env bash
# check_layers.sh [ROOT] - fails when a lower folder of runtime/ includes a
# header of a higher one. The layers, lowest first, and what each may
# include besides itself (runtime/README.md says why):
#
#   base       (none)
#   fault      base
#   memory     fault base
#   transport  base            (transport/tcp and transport/verbs count as
#                               transport; only transport/ itself may
#                               include them)
#   dsm        transport memory fault base
#   coherence  dsm transport memory fault base
#   control    base
#   runtime/ itself (the node and the C API) and runtime/testing: anything
#
# Prints every offending include as FILE:LINE: what it includes, and why
# that is not allowed; exits 1 if there is any, else prints a count and
# exits 0.
set -euo pipefail
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root"

declare -A allowed=(
  [base]="base"
  [fault]="fault base"
  [memory]="memory fault base"
  [transport]="transport base"
  [transport/tcp]="transport/tcp transport base"
  [transport/verbs]="transport/verbs transport base"
  [dsm]="dsm transport memory fault base"
  [coherence]="coherence dsm transport memory fault base"
  [control]="control base"
)

# The layer of a path under runtime/: its folder, with tcp and verbs kept
# apart from the rest of transport; "" for runtime/ itself and testing.
layer_of() {
  local rel="${1#runtime/}"
  case "$rel" in
    transport/tcp/*) echo transport/tcp ;;
    transport/verbs/*) echo transport/verbs ;;
    */*) echo "${rel%%/*}" ;;
    *) echo "" ;;
  esac
}

bad=0
checked=0
while IFS= read -r file; do
  from="$(layer_of "$file")"
  [[ -z "$from" || "$from" == testing ]] && continue
  if [[ -z "${allowed[$from]+x}" ]]; then
    echo "$file: runtime/$from is not a known layer; add it to scripts/check_layers.sh and runtime/README.md"
    bad=$((bad + 1))
    continue
  fi
  while IFS=: read -r line inc; do
    checked=$((checked + 1))
    target="$(layer_of "$inc")"
    ok=0
    # Only transport/ itself picks a fabric (the factory); dsm and above
    # see the generic interface.
    if [[ "$target" == "" || "$target" == testing ]]; then
      ok=0
    else
      for a in ${allowed[$from]}; do
        [[ "$a" == "$target" ]] && ok=1
      done
      [[ "$from" == transport && ( "$target" == transport/tcp || "$target" == transport/verbs ) ]] && ok=1
    fi
    if [[ $ok == 0 ]]; then
      echo "$file:$line: includes $inc: runtime/$from may include only ${allowed[$from]// /, } (a lower layer that needs a decision from above defines an interface of its own)"
      bad=$((bad + 1))
    fi
  done < <(grep -noE '^#include "runtime/[^"]+"' "$file" | sed -E 's/^([0-9]+):#include "([^"]+)"/\1:\2/')
done < <(find -L runtime -type f \( -name '*.h' -o -name '*.cc' \) | sort)

if [[ $bad != 0 ]]; then
  echo "check_layers: $bad include(s) break the layering"
  exit 1
fi
echo "check_layers: $checked includes checked, none breaks the layering"
