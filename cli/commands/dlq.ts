/**
 * `effitag dlq list|redrive`: what is in the dead-letter queues and why, and sending it back, on the
 * stack `--stack` names (its handle lists the intake and tier queues); each queue's DLQ comes from
 * its redrive policy.
 */
import type { Command } from 'commander';
import type { MessageQueue } from '../../pipeline/ports.ts';
import { openCommandStack } from '../stack.ts';
import { listDeadLetters, redriveDeadLetters } from '../../pipeline/dead-letters.ts';
import { parseNumber, printable } from '../format.ts';

interface DlqOptions {
  tier?: string;
  json?: boolean;
  limit?: number;
}

/** The source queues: `intake` and one per tier (or only --tier's). */
async function sources(opts: DlqOptions, command: Command): Promise<{ name: string; queue: MessageQueue }[]> {
  const found = (await openCommandStack(command)).sources;
  const picked = opts.tier ? found.filter((s) => s.name === opts.tier) : found;
  if (opts.tier && !picked.length) throw new Error(`--tier ${opts.tier}: no such queue; there are ${found.map((s) => s.name).join(', ')}`);
  return picked;
}

export function registerDlqCommands(program: Command): void {
  const dlq = program.command('dlq').description('dead-letter queues: what failed and why, and sending it back');
  const common = (c: Command) =>
    c
      .option('--tier <tier>', 'one tier (or "intake") only')
      .option('--json', 'print JSON')
      .option('--limit <n>', 'messages read per DLQ at most', parseNumber('--limit', 1, 1_000_000, true), 10_000);

  common(dlq.command('list').description('messages in each dead-letter queue, grouped by reason')).action(
    async (opts: DlqOptions, command: Command) => {
      const reports = await listDeadLetters(await sources(opts, command), { limit: opts.limit });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
        return;
      }
      for (const r of reports) {
        process.stdout.write(`${r.source} → ${r.deadLetterQueue}: ${r.messages} message(s)\n`);
        for (const g of r.groups)
          process.stdout.write(
            `  ${String(g.count).padStart(6)}  ${printable(g.reason)}\n          e.g. ${printable(g.samples.join(', '))}\n`,
          );
      }
    },
  );

  common(dlq.command('redrive').description('send dead-lettered messages back to the queue they came from')).action(
    async (opts: DlqOptions, command: Command) => {
      const results: { source: string; deadLetterQueue?: string; sent: number }[] = [];
      for (const source of await sources(opts, command)) {
        const { sent, deadLetterQueue } = await redriveDeadLetters(source, { limit: opts.limit });
        results.push({ source: source.name, deadLetterQueue, sent });
        if (opts.json) continue;
        // A line per queue, an empty one included: silence would not tell "nothing there" from "not looked".
        if (!deadLetterQueue) process.stdout.write(`${source.name}: no dead-letter queue (no redrive policy)\n`);
        else if (!sent) process.stdout.write(`${source.name}: nothing to send back (${deadLetterQueue} is empty)\n`);
        else process.stdout.write(`${source.name}: ${sent} message(s) sent back\n`);
      }
      if (opts.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    },
  );
}
