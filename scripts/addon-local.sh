#!/usr/bin/env bash
# A self-contained local add-on folder, for the Supervisor to build on the Home Assistant host
# (its "local add-on" path: a folder in /addons whose config.yaml has no `image:`). The
# Supervisor builds with that folder as the Docker context, so addon/ alone cannot work: its
# Dockerfile copies Cargo.toml, Cargo.lock, src/ and benches/ from the repository root. This
# copies addon/ plus exactly what the Dockerfile's COPY lines name (read from the Dockerfile,
# so the two stay in step) and turns `image:` into a comment.
#   scripts/addon-local.sh [OUT]      default OUT: target/addon-local/camqtt
# Then copy OUT to /addons/camqtt on the Home Assistant host (Samba share or SSH add-on),
# Settings → Add-ons → Add-on store → ⋮ → Check for updates; "camqtt" appears under Local
# add-ons. Installing it builds the image on the host (a Rust release build: expect tens of
# minutes on a Raspberry Pi). The sources are those of this work tree, uncommitted changes too.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-target/addon-local/camqtt}"
case "$out" in
    "" | / | . | ..) echo "addon-local: refusing to use '$out' as the output folder" >&2; exit 2 ;;
esac

# The context paths the Dockerfile copies: every word of a COPY line but the instruction, its
# --flags and the destination (COPY --from=... copies from a stage, not from the context).
mapfile -t sources < <(awk '
    $1 == "COPY" && $0 !~ /--from/ {
        for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i
    }' addon/Dockerfile)
[ ${#sources[@]} -gt 0 ] || { echo "addon-local: no COPY sources found in addon/Dockerfile" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
cp -R addon/. "$out/"
for src in "${sources[@]}"; do
    [ -e "$src" ] || { echo "addon-local: $src (copied by addon/Dockerfile) is missing" >&2; exit 1; }
    mkdir -p "$out/$(dirname "$src")"
    cp -R "$src" "$out/$src"
done

# No `image:`: the Supervisor builds the Dockerfile in the folder instead of pulling.
grep -q '^image:' "$out/config.yaml" ||
    { echo "addon-local: addon/config.yaml has no top-level image: line" >&2; exit 1; }
sed 's|^image:.*|# image: dropped by scripts/addon-local.sh: the Supervisor builds this folder|' \
    addon/config.yaml >"$out/config.yaml"

echo "addon-local: $out ready (${sources[*]} and addon/); copy it to /addons/camqtt on the Home Assistant host"
