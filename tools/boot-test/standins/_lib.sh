# Shared by the stand-ins: every call is logged to $BOOT_STATE/calls.log ("name args...").
# BOOT_STATE is the scenario's state directory, outside the sandbox's tmpfs mounts.
log_call() { printf '%s\n' "$*" >> "$BOOT_STATE/calls.log"; }
# Failures left for a named thing ($BOOT_STATE/fail/<name> holds a count, or "always").
take_failure() {
  f="$BOOT_STATE/fail/$1"
  [ -e "$f" ] || return 1
  n=$(cat "$f")
  [ "$n" = always ] && return 0
  [ "$n" -gt 0 ] 2>/dev/null || return 1
  echo $((n - 1)) > "$f"
  return 0
}
