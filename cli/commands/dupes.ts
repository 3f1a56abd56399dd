/**
 * `effitag dupes s3://bucket[/prefix]`: groups of duplicate images from what the stack stored when it
 * tagged them (perceptual hashes in the tag index, embeddings in the vector index): pipeline/dupes.ts.
 * It reads only; it never deletes or changes anything.
 */
import { parseS3Url } from '../../base/s3-url.ts';
import type { Command } from 'commander';
import { DEFAULT_MAX_DISTANCE, DEFAULT_MIN_SCORE, findDupes } from '../../pipeline/dupes.ts';
import { parseNumber, table } from '../format.ts';
import { requireStackBucket } from '../../pipeline/aws/stack-handle.ts';
import { openCommandStack, stackVectors } from '../stack.ts';

interface DupesCli {
  maxDistance: number;
  minScore: number;
  json?: boolean;
}

export function registerDupesCommand(program: Command): void {
  program
    .command('dupes')
    .description('groups of duplicate images: exact copies by perceptual hash, near ones by embedding (reads only, deletes nothing)')
    .argument('<target>', 's3://bucket[/prefix]')
    .option(
      '--max-distance <bits>',
      `exact copies: perceptual hashes at most this many bits apart (0-64)`,
      parseNumber('--max-distance', 0, 64, true),
      DEFAULT_MAX_DISTANCE,
    )
    .option(
      '--min-score <cosine>',
      'near duplicates: embeddings at least this similar (cosine, above 0 up to 1)',
      parseNumber('--min-score', 0, 1),
      DEFAULT_MIN_SCORE,
    )
    .option('--json', 'print {groups:[{keys, kind, score}], checked} as JSON')
    .action(async (target: string, opts: DupesCli, command: Command) => {
      const { bucket, prefix } = parseS3Url(target);
      const conn = await openCommandStack(command);
      try {
        requireStackBucket(conn.handle, bucket);
        const vectors = stackVectors(conn);
        const report = await findDupes(
          { index: conn.requireIndex(), vectors },
          { bucket, prefix },
          { maxDistance: opts.maxDistance, minScore: opts.minScore },
        );
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(report)}\n`);
          return;
        }
        const { objects, hashed, vectors: withVectors } = report.checked;
        const looked = `${objects} object(s) under s3://${bucket}/${prefix}: ${hashed} with a hash, ${vectors ? `${withVectors} with an embedding` : 'no vector index'}`;
        if (!report.groups.length) {
          process.stdout.write(`no duplicates (${looked})\n`);
          return;
        }
        process.stdout.write(
          table(
            report.groups.flatMap((g, i) =>
              g.keys.map((k, j) =>
                j === 0
                  ? [
                      String(i + 1),
                      g.kind,
                      g.kind === 'exact' ? `${g.distance} bits` : `cosine ${g.score.toFixed(3)}`,
                      `s3://${bucket}/${k}`,
                    ]
                  : ['', '', '', `s3://${bucket}/${k}`],
              ),
            ),
            ['group', 'kind', 'apart', 'object'],
          ),
        );
        process.stdout.write(`${report.groups.length} group(s); ${looked}; nothing was changed\n`);
      } finally {
        conn.close();
      }
    });
}
