#!/usr/bin/env bash
# Keeps the reference readable from a clone of the repository:
#   - no tracked file sends readers outside it (../shared, shared/spec);
#   - every relative link in README.md, docs/*.md and bench/README.md
#     names a file that exists, and every #anchor a heading of that file.
# Usage: check.sh SOURCE_DIR
set -uo pipefail
cd "$1" || exit 1
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

# ---- nothing points outside the repository ----------------------------------
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git ls-files)
else
  files=$(find . -type f -not -path './build*' -not -path './.git/*' | sed 's|^\./||')
fi
self=tests/docs/check.sh
out=$(printf '%s\n' "$files" | grep -vx "$self" | tr '\n' '\0' |
  xargs -0 grep -nIE '\.\./shared|shared/spec' 2>/dev/null)
[ -z "$out" ] || fail "references outside the repository:"$'\n'"$out"

# ---- links and anchors ---------------------------------------------------------
# The anchor a heading gets: lower case, punctuation dropped, spaces to '-'.
anchors_of() {
  grep -E '^#{1,6} ' "$1" | sed -E 's/^#+ +//' | tr 'A-Z' 'a-z' |
    sed -E 's/[^a-z0-9 _-]//g; s/ /-/g'
}
pages=(README.md docs/*.md)
[ -f bench/README.md ] && pages+=(bench/README.md)
checked=0
for page in "${pages[@]}"; do
  dir=$(dirname "$page")
  # Inline links [text](target), outside code blocks.
  links=$(awk '/^```/ {code = !code; next} !code' "$page" |
    grep -oE '\]\([^)[:space:]]+\)' | sed -E 's/^\]\(//; s/\)$//')
  for link in $links; do
    case $link in
    http://* | https://* | mailto:*) continue ;;
    esac
    target=${link%%#*}
    anchor=""
    [ "$link" != "$target" ] && anchor=${link#*#}
    if [ -z "$target" ]; then
      file=$page
    else
      file=$dir/$target
    fi
    checked=$((checked + 1))
    if [ ! -e "$file" ]; then
      fail "$page: link to $link: no such file"
      continue
    fi
    if [ -n "$anchor" ] && ! anchors_of "$file" | grep -qx -- "$anchor"; then
      fail "$page: link to $link: no heading gives #$anchor"
    fi
  done
done

if [ "$fails" -gt 0 ]; then
  echo "docs check: $fails problem(s)"
  exit 1
fi
echo "docs check: $checked links resolve; nothing points outside the repository"
