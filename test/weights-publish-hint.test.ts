/**
 * `weights publish --tiers FILE --weights DIR` with models DIR lacks: the error's fetch command must
 * put them into DIR (`weights fetch` writes to the cache by default, so the printed command, run as
 * is, left a custom catalog lacking them and the publish failing again), one command per missing
 * official variant, and a custom model (not fetchable) is named for `effitag train`.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { S3Client } from '@aws-sdk/client-s3';
import { publishTiersWeights } from '../pipeline/aws/s3-weights.ts';
import { randomArtifact, tempDir } from './support/fixtures.ts';

// Never called: the missing models are refused before any request.
const s3 = new S3Client({ region: 'us-east-1', endpoint: 'http://127.0.0.1:9', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });

async function refusal(models: string[], catalog: string): Promise<string> {
  try {
    await publishTiersWeights(s3, { models, catalog, location: 's3://weights/m/', tiersPath: 'tiers.json' });
  } catch (err) {
    return (err as Error).message;
  }
  return assert.fail('published with models missing');
}

describe('weights publish --tiers: the fix for a catalog that lacks models', () => {
  it('fetches each missing variant into the catalog given (--out DIR/<variant>)', async () => {
    const catalog = await tempDir('effitag-hint-catalog-');
    await randomArtifact(join(catalog, 'b0'), 'b0');
    const msg = await refusal(['b0', 'b1', 'v2-s'], catalog);
    assert.match(msg, /lacks: b1, v2-s\b/);
    assert.ok(msg.includes(`npx effitag weights fetch b1 --out ${join(catalog, 'b1')}`), msg);
    assert.ok(msg.includes(`npx effitag weights fetch v2-s --out ${join(catalog, 'v2-s')}`), msg);
    assert.match(msg, /Nothing was uploaded/);
  });

  it('a custom model is not offered a fetch: it is trained into the catalog', async () => {
    const catalog = await tempDir('effitag-hint-catalog-');
    const msg = await refusal(['my-birds'], catalog);
    assert.doesNotMatch(msg, /weights fetch my-birds/, msg);
    assert.ok(msg.includes(`effitag train`) && msg.includes(join(catalog, 'my-birds')), msg);
  });
});
