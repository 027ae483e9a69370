#!/usr/bin/env bash
# Install Quarto into PREFIX (`make setup` uses .quarto-cli/, ignored by git) when none is on PATH:
# from ../shared/quarto where that offline bundle exists (our build machines), else from PyPI's
# quarto-cli, whose install downloads Quarto itself and so needs internet.
set -uo pipefail
prefix=${1:?usage: tools/install_quarto.sh PREFIX}
bundle="$(cd "$(dirname "$0")/.." && pwd)/../shared/quarto/install.sh"
if [ -x "$bundle" ]; then
  echo "Installing Quarto into $prefix from the offline bundle $(dirname "$bundle")"
  "$bundle" "$prefix" >"$prefix.log" 2>&1 && rm -f "$prefix.log" && exit 0
  echo "error: the offline bundle failed (its output is in $prefix.log)." >&2
else
  echo "Installing Quarto into $prefix from PyPI's quarto-cli (it downloads Quarto: needs internet)"
  python3 -m venv "$prefix/venv" && "$prefix/venv/bin/pip" install -q 'quarto-cli>=1.9' \
    && mkdir -p "$prefix/bin" && ln -sf ../venv/bin/quarto "$prefix/bin/quarto" && exit 0
  rm -rf "$prefix"
fi
echo "error: could not install Quarto, which renders the book's site. Either put Quarto 1.9 or later on" \
     "PATH yourself (https://quarto.org/docs/get-started/, or conda-forge's \`quarto\`), or make" \
     "../shared/quarto/install.sh available, or give this machine internet for PyPI's quarto-cli." \
     "The notebooks alone still run: python tools/build_book.py --no-render" >&2
exit 1
