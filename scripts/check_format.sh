#!/usr/bin/env bash
# Fails, listing the files, when a tracked C++ file differs from what .clang-format makes of it.
# Fix with: git ls-files '*.cpp' '*.h' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."
bad=()
while IFS= read -r f; do
  if ! clang-format --style=file "$f" | cmp -s - "$f"; then bad+=("$f"); fi
done < <(git ls-files '*.cpp' '*.h')
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: ${#bad[@]} files are not formatted (run: git ls-files '*.cpp' '*.h' | xargs clang-format -i):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check_format: $(git ls-files '*.cpp' '*.h' | wc -l) files formatted"
