# Sourced by the test scripts: `section TITLE` prints a suite's title with the minutes and
# seconds since the test command started (BIOMEDCLIP_TEST_START, epoch seconds), so that a CI
# log shows where the time went.
section() {
  local t=$(( $(date +%s) - ${BIOMEDCLIP_TEST_START:-$(date +%s)} ))
  printf '== %s  [%d:%02d]\n' "$1" $((t / 60)) $((t % 60))
}
