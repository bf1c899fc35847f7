# syntax=docker/dockerfile:1
# The dashboard, the demo shop and the browser bundles, served by nginx as an unprivileged user.
# Build from the repository root:
#   docker build -f deploy/docker/web.Dockerfile -t tandem/web:dev .

ARG NODE_IMAGE=node:22-bookworm-slim
ARG NGINX_IMAGE=nginxinc/nginx-unprivileged:1.27-alpine

# Build web/dist as `make web` does.
FROM ${NODE_IMAGE} AS build
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN node build.mjs

# The nginx-unprivileged image runs as uid 101 and keeps its pid and temporary files in /tmp.
FROM ${NGINX_IMAGE}
COPY deploy/docker/web.nginx.conf /etc/nginx/conf.d/default.conf
COPY --from=build /src/web/dist /usr/share/nginx/html
USER 101:101
EXPOSE 8080
CMD ["nginx", "-g", "daemon off;"]
