#!/usr/bin/env node
// The `sello` executable. sello is TypeScript run by Node's built-in type stripping, which needs
// Node >= 22.19 (and mailauth 7 does not load on older Node): say so plainly instead of failing
// with a syntax error deep in an import.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(`sello needs Node.js >= 22.19 (this is ${process.version}); run it through npm (npm start, npm run sello -- …) to use the pinned Node 24, or install Node 24.\n`);
  process.exit(1);
}
await import('../src/main.ts');
