/**
 * `--profile` reaches the S3 Vectors client as it reaches the S3, SQS and DynamoDB clients: a deployed
 * stack opened with a profile signs its vector requests with that profile's key pair, in that
 * profile's region (the client took the region only, so it signed with the default chain's keys,
 * in AWS_REGION or us-east-1). Checked on the wire: a loopback server stands in for the S3 Vectors
 * endpoint (AWS_ENDPOINT_URL_S3VECTORS, as the rehearsal sets) and records each request's
 * SigV4 Authorization header, which names the access key and the region it was signed for.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { handleFromOutputs, openStack } from '../pipeline/aws/stack-handle.ts';
import { stackVectors } from '../cli/stack.ts';
import { tempDir } from './support/fixtures.ts';

/** The outputs a deployed stack's handle needs, and its vector bucket. */
const OUTPUTS = {
  BucketName: 'photos-bucket',
  WeightsLocation: 's3://photos-weights/models/',
  QueueUrls: JSON.stringify({ cpu: 'https://sqs.ap-south-1.amazonaws.com/111111111111/Photos-cpu.fifo' }),
  VectorBucket: 'photos-vectors',
};
const DEFAULT_KEY = 'AKIADEFAULTPROFILE00';
const WORK_KEY = 'AKIAWORKPROFILE00000';

/** `Credential=KEY/DATE/REGION/SERVICE/aws4_request` of a SigV4 Authorization header. */
function signedBy(authorization: string | undefined): { key: string; region: string; service: string } | undefined {
  const m = /Credential=([^/]+)\/\d{8}\/([^/]+)\/([^/]+)\/aws4_request/.exec(authorization ?? '');
  return m ? { key: m[1], region: m[2], service: m[3] } : undefined;
}

describe('--profile on a deployed stack: the S3 Vectors client signs as the profile', () => {
  const ENV_KEYS = [
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
    'AWS_SESSION_TOKEN',
    'AWS_PROFILE',
    'AWS_REGION',
    'AWS_DEFAULT_REGION',
    'AWS_CONFIG_FILE',
    'AWS_SHARED_CREDENTIALS_FILE',
    'AWS_ENDPOINT_URL',
    'AWS_ENDPOINT_URL_S3VECTORS',
  ];
  const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
  const seen: (string | undefined)[] = [];
  let server: Server;

  before(async () => {
    server = createServer((req, res) => {
      seen.push(req.headers.authorization);
      req.resume();
      // Any answer will do: the request's signature is what is checked. A 400 is not retried.
      res.writeHead(400, { 'content-type': 'application/json', 'x-amzn-errortype': 'ValidationException' });
      res.end(JSON.stringify({ message: 'recorded' }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const dir = await tempDir('effitag-vectors-profile-');
    // The shared files as `aws configure` writes them: a default profile, and `work` in its own region.
    writeFileSync(
      join(dir, 'credentials'),
      `[default]\naws_access_key_id = ${DEFAULT_KEY}\naws_secret_access_key = default-secret\n\n` +
        `[work]\naws_access_key_id = ${WORK_KEY}\naws_secret_access_key = work-secret\n`,
    );
    writeFileSync(join(dir, 'config'), '[default]\nregion = eu-west-1\n\n[profile work]\nregion = ap-south-1\n');
    for (const k of ENV_KEYS) delete process.env[k];
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, 'credentials');
    process.env.AWS_CONFIG_FILE = join(dir, 'config');
    process.env.AWS_ENDPOINT_URL_S3VECTORS = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(() => {
    server?.close();
    server?.closeAllConnections();
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  });

  /** The signer of one vector query through `vectors`. */
  async function signerOf(vectors: ReturnType<typeof stackVectors>) {
    assert.ok(vectors, 'the stack names a vector bucket: it has a vector index');
    const before = seen.length;
    await assert.rejects(vectors.spaces());
    assert.ok(seen.length > before, 'the request reached the stand-in endpoint');
    return signedBy(seen.at(-1));
  }

  it("openStack's vector index (similar, dupes, the gallery): the profile's key pair and region", async () => {
    const open = openStack(handleFromOutputs('Photos', OUTPUTS, { profile: 'work' }));
    try {
      assert.deepEqual(await signerOf(open.vectors), { key: WORK_KEY, region: 'ap-south-1', service: 's3vectors' });
    } finally {
      open.close();
    }
  });

  it("a writing command's own client (backfill --embeddings on a deployed stack): the profile's too", async () => {
    const open = openStack(handleFromOutputs('Photos', OUTPUTS, { profile: 'work' }));
    try {
      const writer = stackVectors(open, 'write');
      assert.notEqual(writer, open.vectors, "a deployed stack's writer is its own client");
      assert.deepEqual(await signerOf(writer), { key: WORK_KEY, region: 'ap-south-1', service: 's3vectors' });
    } finally {
      open.close();
    }
  });

  it('a region named beside the profile wins, as for the other clients; no profile: the default chain', async () => {
    const named = openStack(handleFromOutputs('Photos', OUTPUTS, { profile: 'work', region: 'us-west-2' }));
    const plain = openStack(handleFromOutputs('Photos', OUTPUTS, { region: 'us-west-2' }));
    try {
      assert.deepEqual(await signerOf(named.vectors), { key: WORK_KEY, region: 'us-west-2', service: 's3vectors' });
      assert.equal(await named.s3.config.region(), 'us-west-2', 'the S3 client agrees');
      assert.deepEqual(await signerOf(plain.vectors), { key: DEFAULT_KEY, region: 'us-west-2', service: 's3vectors' });
    } finally {
      named.close();
      plain.close();
    }
  });
});
