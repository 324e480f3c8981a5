# One image for both components: `controller` and `agent` are subcommands of the CLI.
#   docker build -t ghcr.io/packet-capture/packet-capture:0.1.0 .
# scripts/image (`npm run image`) builds the same image without docker, as an OCI archive:
# keep the two in step (packages, what leaves node_modules, entrypoint, user).
# The Node that package.json pins (the `node` package), on Debian bookworm.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# The compiled JavaScript: npm run build (tsc -p tsconfig.build.json) into build/.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

# Runtime dependencies only, less what is never loaded at run time: the `node` package (the
# base image has Node), tsx (the image runs compiled JavaScript), cdk8s (synthesis only), type
# declarations and source maps. Install scripts are skipped: the `node` package's would fetch
# a second Node.
FROM ${NODE_IMAGE} AS modules
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm uninstall --no-save --omit=dev --ignore-scripts --no-audit --no-fund node tsx cdk8s cdk8s-plus-28 constructs \
 && find node_modules \( -name '*.d.ts' -o -name '*.d.[cm]ts' -o -name '*.map' \) -type f -delete \
 && find node_modules -type d -empty -delete

FROM ${NODE_IMAGE}
# tcpdump captures; nsenter and setpriv (util-linux) enter a pod's network namespace and
# set a parent-death signal without a shell; ip (iproute2) helps when debugging on a node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tcpdump util-linux iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# package.json says "type": "module", which the compiled files need
COPY package.json ./
COPY --from=modules /app/node_modules ./node_modules
COPY --from=build /src/build ./build

# Unprivileged by default; the agent's DaemonSet runs it as root (see cdk8s/agent.ts).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/node", "/app/build/cli/packet-capture.js"]
