# Sourced by the frontier scripts: they name the checkout's own paths (reports/frontier/...), so they run from
# the checkout's root wherever they are started. Run from another folder they made reports/ there, or said a
# finished sweep had not finished. TINYMNIST (default: tinymnist on PATH) may be a path relative to where you
# started: it is made absolute first.
TINYMNIST=${TINYMNIST:-tinymnist}
case "$TINYMNIST" in */*) TINYMNIST=$(realpath "$TINYMNIST") ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
