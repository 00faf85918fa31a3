# sello — production image: Node 24 LTS (slim), no dev dependencies, non-root.
# Build: docker build -t sello .
# Run:   docker run -v $PWD/keys:/app/keys -v $PWD/config/docker.yaml:/app/config/sello.yaml \
#          -p 587:2587 -p 10025:10025 sello
# sello is TypeScript run by Node's built-in type stripping: there is no build step, the image
# carries src/ as it is.

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
# keys/ (private keys, 0600) and mail/ (the dir: target) are volumes owned by the node user.
RUN mkdir -p /app/keys /app/mail && chown node:node /app/keys /app/mail && chmod 0700 /app/keys
USER node
VOLUME ["/app/keys", "/app/mail"]
EXPOSE 2587 10025
# Until /healthz exists: healthy while the first listener accepts connections and greets.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD node -e "const s=require('net').connect(Number(process.env.SELLO_HEALTH_PORT||2587),'127.0.0.1');s.setTimeout(4000,()=>process.exit(1));s.once('data',d=>process.exit(String(d).startsWith('220')?0:1));s.once('error',()=>process.exit(1))"
ENTRYPOINT ["node", "bin/sello.js"]
CMD ["serve", "--config", "/app/config/sello.yaml"]
