# Shell helpers shared by the project's scripts (sourced, not run).

# ensure_apt PKG...: installs the Debian packages that are not installed yet (apt-get update
# first), as root or through sudo; prints nothing when every package is present.
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then sudo="sudo"; else
            echo "gemma-node: need root (or sudo) to install: ${missing[*]}" >&2; return 1
        fi
    fi
    echo "gemma-node: installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_swift: puts Swift 6 on PATH (the toolchain lives in /opt/swift on the machines this
# project is built on) or fails with what to do.
ensure_swift() {
    if ! command -v swift >/dev/null; then
        if [ -x /opt/swift/usr/bin/swift ]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            echo "gemma-node: no Swift toolchain found. Install Swift 6 (swift.org, Debian 12 build) and put it on PATH." >&2
            return 1
        fi
    fi
}
