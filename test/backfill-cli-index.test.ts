/**
 * `effitag backfill` as a user runs it against `npm start`'s stack: an image uploaded with ~1,900
 * bytes of user metadata is tagged in the index only (no room for the marker), and the command must
 * read that from the index rather than enqueue it again (an inference per such object on every
 * backfill, for nothing: the result can never fit). The CLI used to hand the router an index only
 * when some tier wrote to the index alone; tiers/local.json writes metadata.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EmbeddedStack } from '../local/stack.ts';
import { backfillDryRun } from './support/effitag-local.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { put, startTestStack, waitFor, waitForStatus } from './support/local-stack.ts';

const NEARLY_FULL = { notes: 'x'.repeat(1900) };

describe('effitag backfill on the embedded stack: objects tagged in the index only', () => {
  let stack: EmbeddedStack;
  let weights: string;
  before(async () => {
    weights = await tempDir('effitag-weights-');
    await randomArtifact(join(weights, 'b0'), 'b0');
    ({ stack } = await startTestStack(JSON.parse(readFileSync('tiers/local.json', 'utf8')), { weightsDir: weights }));
  });
  after(async () => {
    await stack?.stop();
  });

  it('a dry run finds the full-budget image current (read from the index), not to be enqueued again', async () => {
    const jpeg = await gradientImage(240, 180, 'jpeg', 21);
    const fullETag = await put(stack, 'budget/full.jpg', jpeg, { ContentType: 'image/jpeg', Metadata: NEARLY_FULL });
    const plainETag = await put(stack, 'budget/plain.jpg', await gradientImage(240, 180, 'jpeg', 22), {
      ContentType: 'image/jpeg',
    });
    await waitForStatus(stack, 'budget/plain.jpg', plainETag, 60_000);
    await waitFor(
      'budget/full.jpg in the index',
      async () => ((await stack.index.get(stack.bucket, 'budget/full.jpg'))?.eTag === fullETag ? true : undefined),
      60_000,
    );

    const report = await backfillDryRun(`s3://${stack.bucket}/budget/`);
    assert.deepEqual(
      [report.listed, report.enqueued, report.skipped.current, report.errors],
      [2, 0, 2, 0],
      `both current, nothing to enqueue: ${JSON.stringify(report)}`,
    );
  });
});
