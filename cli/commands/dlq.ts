/**
 * `effitag dlq list|redrive`: what is in the dead-letter queues and why, and sending it back. On the
 * embedded stack (queues found by name at --sqs-endpoint) or on AWS (--aws, the stack outputs
 * QueueUrls and IntakeQueueUrl); each queue's DLQ comes from its redrive policy.
 */
import type { Command } from 'commander';
import type { MessageQueue } from '../../pipeline/ports.ts';
import { connect, embeddedEndpoints, pipelineQueues } from '../../pipeline/aws/wiring.ts';
import { listDeadLetters, redriveDeadLetters } from '../../pipeline/dead-letters.ts';
import { parseNumber, printable } from '../format.ts';

interface DlqOptions {
  tier?: string;
  aws?: boolean;
  sqsEndpoint: string;
  queueUrls?: string;
  intakeUrl?: string;
  json?: boolean;
  limit?: number;
}

/** The source queues: `intake` and one per tier (or only --tier's). */
async function sources(opts: DlqOptions): Promise<{ name: string; queue: MessageQueue }[]> {
  const conn = connect(opts.aws ? { kind: 'aws' } : { kind: 'embedded', sqsEndpoint: opts.sqsEndpoint });
  const found = await pipelineQueues(conn, { queueUrls: opts.queueUrls, intakeUrl: opts.intakeUrl });
  const picked = opts.tier ? found.filter((s) => s.name === opts.tier) : found;
  if (opts.tier && !picked.length) throw new Error(`--tier ${opts.tier}: no such queue; there are ${found.map((s) => s.name).join(', ')}`);
  return picked;
}

export function registerDlqCommands(program: Command): void {
  const dlq = program.command('dlq').description('dead-letter queues: what failed and why, and sending it back');
  const common = (c: Command) =>
    c
      .option('--tier <tier>', 'one tier (or "intake") only')
      .option('--aws', 'real AWS (credentials from the environment) instead of the embedded stack')
      .option('--sqs-endpoint <url>', 'embedded stack SQS endpoint', embeddedEndpoints().sqsEndpoint)
      .option('--queue-urls <json>', 'tier → queue URL (AWS; the stack output QueueUrls, env EFFITAG_QUEUE_URLS)')
      .option('--intake-url <url>', 'the intake queue (AWS; the stack output IntakeQueueUrl, env EFFITAG_INTAKE_URL)')
      .option('--limit <n>', 'messages read per DLQ at most', parseNumber('--limit', 1, 1_000_000, true), 10_000);

  common(dlq.command('list').description('messages in each dead-letter queue, grouped by reason'))
    .option('--json', 'print JSON')
    .action(async (opts: DlqOptions) => {
      const reports = await listDeadLetters(await sources(opts), { limit: opts.limit });
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
    });

  common(dlq.command('redrive').description('send dead-lettered messages back to the queue they came from')).action(
    async (opts: DlqOptions) => {
      for (const source of await sources(opts)) {
        const { sent, deadLetterQueue } = await redriveDeadLetters(source, { limit: opts.limit });
        // A line per queue, an empty one included: silence would not tell "nothing there" from "not looked".
        if (!deadLetterQueue) process.stdout.write(`${source.name}: no dead-letter queue (no redrive policy)\n`);
        else if (!sent) process.stdout.write(`${source.name}: nothing to send back (${deadLetterQueue} is empty)\n`);
        else process.stdout.write(`${source.name}: ${sent} message(s) sent back\n`);
      }
    },
  );
}
