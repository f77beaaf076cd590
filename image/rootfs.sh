#!/bin/sh
# Stages the image's root filesystem in OUT: the binaries (debug info stripped) in
# /usr/local/bin, every shared library they load (from ldd, the dynamic loader included) at its
# own path, CA certificates, and /etc/passwd with root and nonroot (65532). Nothing else: no
# shell, no package manager. The Dockerfile's build stage runs it; so does `make image`
# (image/build.sh), on binaries built on this Debian host, for the same layout without pulls.
#   image/rootfs.sh OUT BINARY...
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUT BINARY..." >&2; exit 2; }
out=$1
shift
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$out/home/nonroot"
chmod 1777 "$out/tmp"
chown 65532:65532 "$out/home/nonroot" 2>/dev/null || true

for bin in "$@"; do
  [ -x "$bin" ] || { echo "rootfs: $bin is not an executable" >&2; exit 1; }
  strip --strip-debug -o "$out/usr/local/bin/$(basename "$bin")" "$bin"
  # `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and the loader's own
  # `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
  deps=$(ldd "$bin")
  if echo "$deps" | grep -q "not found"; then
    echo "rootfs: $bin needs a library this machine lacks:" >&2
    echo "$deps" >&2
    exit 1
  fi
  libs=$(echo "$deps" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  for lib in $libs; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
done

# The API server's own CA comes from the service account; these serve anything else over TLS.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
