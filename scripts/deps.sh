#!/usr/bin/env bash
# deps.sh build|test: install the Debian packages smtpfwd needs to build or
# to run its tests, only when some are missing (apt-get, non-interactive).
set -euo pipefail

usage() {
	echo "usage: $0 build|test" >&2
	exit 2
}

[ $# -eq 1 ] || usage
case "$1" in
build) wanted="gcc make pkg-config libev-dev libssl-dev libinih-dev" ;;
test) wanted="libcmocka-dev python3 python3-pytest postfix swaks openssl valgrind" ;;
*) usage ;;
esac

missing=""
for pkg in $wanted; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = "installed" ] || missing="$missing $pkg"
done
missing=${missing# }
[ -n "$missing" ] || exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing packages ($missing) and no apt-get; install them by hand" >&2
	exit 1
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "deps.sh: missing packages ($missing); run as root or install sudo" >&2
		exit 1
	fi
	sudo="sudo"
fi

echo "deps.sh: installing $1 dependencies: $missing"
export DEBIAN_FRONTEND=noninteractive
case " $missing " in
*" postfix "*)
	echo "postfix postfix/main_mailer_type select No configuration" |
		$sudo debconf-set-selections
	;;
esac
if ! $sudo apt-get update -q >/dev/null; then
	echo "deps.sh: apt-get update failed" >&2
	exit 1
fi
# shellcheck disable=SC2086 # word splitting of the package list is wanted
if ! $sudo env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends $missing; then
	echo "deps.sh: apt-get install failed for: $missing" >&2
	exit 1
fi
