#!/usr/bin/env bash
# Keeps man/mailagent.1 in agreement with the command it documents:
#   - the commands listed by `mailagent --help` are the page's COMMANDS
#     subsections, and each subsection's synopsis is the command's usage
#     line, word for word;
#   - each command's own options (its --help before "Global options") are
#     exactly the options its subsection documents;
#   - the global options of `mailagent --help` and of every command's --help
#     are exactly those of the page's GLOBAL OPTIONS;
#   - every environment variable a --help names has an ENVIRONMENT entry,
#     every exit status it names has an EXIT STATUS entry, and the page's
#     version is `mailagent --version`'s;
#   - groff renders the page without a warning.
# Usage: check.sh MAILAGENT_BINARY MAN_PAGE
set -uo pipefail
bin=$1
page=$2
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
in_ci() { [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; }

# ---- the page as text ------------------------------------------------------
# Source lines of one section: from the line `.SH NAME` (or `.SS NAME`) up to
# the next heading of the same or a higher level.
section() {   # section SH|SS TITLE
  awk -v lvl=".$1" -v want="$2" '
    function title(line) { sub(/^\.S[HS][ \t]+/, "", line); gsub(/"/, "", line); return line }
    /^\.SH/ || (lvl == ".SS" && /^\.SS/) { if (on) exit; if (index($0, lvl) == 1 && title($0) == want) { on = 1; next } }
    on { print }' "$page"
}
# Long options and -h/-V written in roff source: "\-\-name" -> "--name".
roff_options() {
  sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' | grep -oE -- '(^|[^A-Za-z0-9-])--?[A-Za-z][A-Za-z-]*' |
    sed -E 's/^[^-]+//' | grep -E -- '^(--[a-z]|-[hV]$)' | sort -u
}
# Options in --help text (long ones, and the short -h/-V).
help_options() {
  grep -oE -- '(^|[^A-Za-z0-9-])--?[A-Za-z][A-Za-z-]*' | sed -E 's/^[^-]+//' |
    grep -E -- '^(--[a-z]|-[hV]$)' | sort -u
}
same_set() {  # same_set WHAT "help-set" "man-set"
  local only_help only_man
  only_help=$(comm -23 <(printf '%s\n' "$2" | sed '/^$/d') <(printf '%s\n' "$3" | sed '/^$/d'))
  only_man=$(comm -13 <(printf '%s\n' "$2" | sed '/^$/d') <(printf '%s\n' "$3" | sed '/^$/d'))
  [ -z "$only_help" ] || fail "$1: in --help but not in the man page: $(echo $only_help)"
  [ -z "$only_man" ] || fail "$1: in the man page but not in --help: $(echo $only_man)"
}

top=$("$bin" --help) || { echo "FAIL: $bin --help exits non-zero"; exit 1; }

# ---- commands --------------------------------------------------------------
help_cmds=$(printf '%s\n' "$top" | awk '/^Commands:/ {on = 1; next} on && /^$/ {exit}
  on && /^  [a-z]+ [a-z-]+/ {print $1 " " $2}' | sort -u)
man_cmds=$(section SH COMMANDS | awk '/^\.SS/ {sub(/^\.SS[ \t]+/, ""); gsub(/"/, ""); print}' | sort -u)
[ -n "$help_cmds" ] || fail "no command found in mailagent --help"
same_set "commands" "$help_cmds" "$man_cmds"

# ---- the page rendered, for synopses ---------------------------------------
render=""
if command -v groff >/dev/null 2>&1; then
  # One very long line per paragraph, plain ASCII, no overstriking.
  render=$(groff -man -Tascii -rLL=1000n -P-c -P-b -P-u -P-o "$page" 2>/dev/null |
    sed -E 's/^ +//; s/ +/ /g')
  warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
  [ -z "$warnings" ] || fail "groff warns about the page: $warnings"
elif in_ci; then
  fail "groff is missing (CI=$CI): scripts/install-deps.sh installs groff-base"
else
  echo "note: groff not installed: synopses and rendering not checked"
fi

# ---- global options ----------------------------------------------------------
globals_of() { awk '/^Global options/ {on = 1; next} on && /^$/ {exit} on' | help_options; }
man_globals=$(section SH "GLOBAL OPTIONS" | roff_options)
same_set "global options" "$(printf '%s\n' "$top" | globals_of)" "$man_globals"

# ---- each command ------------------------------------------------------------
usage_prefix="usage: mailagent [--db PATH] [--redis URL] [--channel NAME] "
all_help=$top
while read -r group cmd; do
  [ -n "$group" ] || continue
  h=$("$bin" "$group" "$cmd" --help) || { fail "$group $cmd --help exits non-zero"; continue; }
  all_help+=$'\n'$h
  own=$(printf '%s\n' "$h" | awk '/^Global options/ {exit} NR > 1 {print}' | help_options)
  # The usage line's own options count too (they are the synopsis).
  own=$(printf '%s\n%s\n' "$own" "$(printf '%s\n' "$h" | head -1 | sed "s/^usage: mailagent //" |
    sed -E 's/^\[--db PATH\] \[--redis URL\] \[--channel NAME\] //' | help_options)" |
    sed '/^$/d' | grep -vx -- '--help' | sort -u)
  # A global option named in a command's text is checked with the globals.
  own=$(comm -23 <(printf '%s\n' "$own") <(printf '%s\n' "$man_globals"))
  man_own=$(comm -23 <(section SS "$group $cmd" | roff_options) <(printf '%s\n' "$man_globals"))
  same_set "'$group $cmd' options" "$own" "$man_own"
  # A command's help leaves out what only the top level takes: -V, --version.
  sub_globals=$(printf '%s\n%s\n%s\n' "$(printf '%s\n' "$h" | globals_of)" -V --version | sort -u)
  same_set "'$group $cmd' global options" "$sub_globals" "$man_globals"
  usage=$(printf '%s\n' "$h" | head -1)
  case $usage in
  "$usage_prefix"*) synopsis="mailagent ${usage#"$usage_prefix"}" ;;
  *) fail "'$group $cmd' usage line has an unexpected form: $usage"; continue ;;
  esac
  if [ -n "$render" ] && ! grep -qxF -- "$synopsis" <<<"$render"; then
    fail "'$group $cmd': the man page has no synopsis line \"$synopsis\""
  fi
done <<<"$help_cmds"

# ---- environment, exit status, version -------------------------------------
man_env=$(section SH ENVIRONMENT | awk '/^\.B [A-Z_]+$/ {print $2}' | sort -u)
for v in $(printf '%s\n' "$all_help" | grep -oE '\$[A-Z][A-Z_]+' | tr -d '$' | sort -u); do
  grep -qx "$v" <<<"$man_env" || fail "--help names \$$v; the man page's ENVIRONMENT does not"
done
codes=$(printf '%s\n' "$top" | grep -E '^Exit status:' | grep -oE '\b[0-9]+\b' | sort -u)
[ -n "$codes" ] || fail "mailagent --help names no exit status"
man_codes=$(section SH "EXIT STATUS" | awk '/^\.B [0-9]+$/ {print $2}' | sort -u)
same_set "exit statuses" "$codes" "$man_codes"
version=$("$bin" --version | awk '{print $NF}')
grep -qE "^\.TH MAILAGENT 1 .*\"mailagent-events $version\"" "$page" ||
  fail "the man page's .TH does not name version $version"

if [ "$fails" -gt 0 ]; then
  echo "man page check: $fails disagreement(s)"
  exit 1
fi
echo "man page check: $(wc -l <<<"$help_cmds") commands, options, environment, exit statuses and version agree"
