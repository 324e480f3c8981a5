# One image for both components: `controller` and `agent` are subcommands of the CLI.
#   docker build -t ghcr.io/packet-capture/packet-capture:0.1.0 .
# scripts/image (`npm run image`) builds the same image without docker, as an OCI archive:
# keep the two in step (packages, the bundle and no node_modules, entrypoint, user).
# The Node that package.json pins (the `node` package), on Debian bookworm.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# The bundled JavaScript: npm run build (scripts/build, esbuild) into build/. The bundle holds
# its dependencies, so the image has no node_modules.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

FROM ${NODE_IMAGE}
# tcpdump captures; nsenter and setpriv (util-linux) enter a pod's network namespace and
# set a parent-death signal without a shell; ip (iproute2) helps when debugging on a node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tcpdump util-linux iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# package.json says "type": "module", which the bundle's files need
COPY package.json ./
COPY --from=build /src/build ./build

# Unprivileged by default; the agent's DaemonSet runs it as root (see cdk8s/agent.ts).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/node", "/app/build/cli/packet-capture.js"]
