# One image for both components: `controller` and `agent` are subcommands of the CLI.
#   docker build -t ghcr.io/packet-capture/packet-capture:0.1.0 .
FROM node:24-slim

# tcpdump captures; nsenter and setpriv (util-linux) enter a pod's network namespace and
# set a parent-death signal without a shell; ip (iproute2) helps when debugging on a node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tcpdump util-linux iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
# Runtime dependencies only, plus tsx, which runs the TypeScript sources but is listed as a
# devDependency. Install scripts are skipped: the `node` package would fetch a second Node.
RUN npm ci --omit=dev --ignore-scripts \
 && npm install --omit=dev --no-save --ignore-scripts "tsx@$(node -p 'require("./package.json").devDependencies.tsx')" \
 && npm cache clean --force

COPY tsconfig.json ./
COPY cli ./cli
COPY controller ./controller
COPY agent ./agent
COPY kube ./kube
COPY crds ./crds

# Unprivileged by default; the agent's DaemonSet runs it as root (see cdk8s/agent.ts).
USER 65532:65532
ENTRYPOINT ["node_modules/.bin/tsx", "cli/packet-capture.ts"]
