# sello — production image: Node 24 LTS (slim), no dev dependencies, non-root.
# Build: docker build -t sello .
# Run:   docker run -v $PWD/keys:/app/keys -e SELLO_RELAY_TARGET=smtp://mta.example.com:25 \
#          -p 25:2525 -p 587:2587 -p 465:2465 -p 127.0.0.1:9464:9464 sello
# The image's config is config/examples/docker.yaml (listeners and metrics on 0.0.0.0); mount
# your own over /app/config/sello.yaml. sello is TypeScript run by Node's built-in type
# stripping: there is no build step, the image carries src/ as it is.

FROM node:24-bookworm-slim AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev leaves out TypeScript and the node@24 package (the image has Node 24 already);
# no production dependency needs an install script.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY config ./config
# In a container the listeners must not be on loopback: the container config is the default.
COPY config/examples/docker.yaml ./config/sello.yaml
# keys/ (private keys, 0600) and mail/ (the dir: target) are volumes owned by the node user
# (uid 1000, which the Kubernetes manifests run as too).
RUN mkdir -p /app/keys /app/mail && chown node:node /app/keys /app/mail && chmod 0700 /app/keys
USER node
VOLUME ["/app/keys", "/app/mail"]
# mx, submission (STARTTLS), submissions (implicit TLS), metrics (/metrics, /healthz, /readyz).
EXPOSE 2525 2587 2465 9464
# Alive = /healthz answers 200 on the metrics port (metrics.listen, 0.0.0.0:9464 in the image's
# config). Node's own fetch: the slim image has no curl. SELLO_HEALTH_PORT for another port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.SELLO_HEALTH_PORT||9464)+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/sello.js"]
CMD ["serve", "--config", "/app/config/sello.yaml"]
