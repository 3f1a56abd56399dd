/** `effitag search`: objects by tag, from the tag index of the stack (`--stack`: the embedded one, or a deployed one). */
import { parseS3Url } from '../../base/s3-url.ts';
import type { Command } from 'commander';
import { normalizeTag, suggestTags } from '../../model/tag-hierarchy.ts';
import { requireStackBucket } from '../../pipeline/aws/stack-handle.ts';
import { openCommandStack } from '../stack.ts';
import { FAILED_TAG, headlineTags, type SearchHit } from '../../pipeline/tag-index.ts';
import { parseNumber, printable, table } from '../format.ts';

interface SearchCli {
  tag: string[];
  minP?: number;
  limit: number;
  cursor?: string;
  json?: boolean;
  failed?: boolean;
}

/** The tags asked for and the image's own classes, with their probabilities. */
const describeTags = (hit: SearchHit, asked: readonly string[]) =>
  headlineTags(hit.tags, asked)
    .map(({ tag, p }) => `${tag} ${p.toFixed(2)}`)
    .join(', ');

export function registerSearchCommand(program: Command): void {
  program
    .command('search')
    .description('find tagged objects by tag (leaf or rolled-up: "golden retriever", "dog", "vehicle"), newest first')
    .argument('<target>', 's3://bucket[/prefix]')
    .option('--tag <tag>', 'a tag the objects must have (repeat: all of them)', (v: string, all: string[]) => [...all, v], [])
    .option('--min-p <p>', 'minimum probability of every --tag', parseNumber('--min-p', 0, 1))
    .option('--limit <n>', 'results at most', parseNumber('--limit', 1, 100_000, true), 20)
    .option('--cursor <cursor>', 'continue after a previous search (its printed cursor)')
    .option('--failed', 'objects whose tagging failed for good, with the reason (instead of --tag)')
    .option('--json', 'print {hits, cursor} as JSON (keys as they are; the table escapes control characters)')
    .action(async (target: string, opts: SearchCli, command: Command) => {
      const { bucket, prefix } = parseS3Url(target);
      if (opts.failed && opts.tag.length) throw new Error('--failed lists failures; it takes no --tag');
      const tags = opts.failed ? [FAILED_TAG] : opts.tag.map(normalizeTag).filter(Boolean);
      for (const t of opts.failed ? [] : tags)
        if (!suggestTags(t, 50).some((s) => s.tag === t)) {
          const near = suggestTags(t, 5).map((s) => s.tag);
          process.stderr.write(
            `note: "${printable(t)}" is no ImageNet class or category${near.length ? ` (did you mean: ${near.join(', ')}?)` : ''}; searching anyway (custom labels)\n`,
          );
        }
      const conn = await openCommandStack(command);
      try {
        requireStackBucket(conn.handle, bucket);
        const index = conn.requireIndex();
        const hits: SearchHit[] = [];
        let cursor = opts.cursor;
        do {
          const page = await index.search({
            bucket,
            tags,
            prefix: prefix || undefined,
            minProbability: opts.minP,
            limit: Math.min(1000, opts.limit - hits.length),
            cursor,
          });
          hits.push(...page.hits);
          cursor = page.cursor;
        } while (cursor && hits.length < opts.limit);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ hits, ...(cursor ? { cursor } : {}) })}\n`);
          return;
        }
        if (!hits.length) {
          process.stdout.write('no objects found\n');
          return;
        }
        process.stdout.write(
          table(
            hits.map((h) => [
              `s3://${h.bucket}/${h.key}`,
              h.failure ?? describeTags(h, tags),
              h.lastModified.slice(0, 19).replace('T', ' '),
            ]),
            ['object', opts.failed ? 'why it failed' : 'tags', 'uploaded'],
          ),
        );
        if (cursor) process.stdout.write(`more: --cursor ${cursor}\n`);
      } finally {
        conn.close();
      }
    });
}
