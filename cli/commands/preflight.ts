/**
 * `effitag preflight`: what a stack still lacks, before anything is uploaded (and, before the first
 * deploy, whether the deploy would be refused). Reads the stack's outputs and resources, the tiers
 * file and the deploy context (cdk.json's context, overridden by -c key=value as with `cdk deploy`),
 * then asks AWS read-only questions through pipeline/preflight.ts's port. Exit 0 when nothing is
 * missing, 1 otherwise.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { Node } from 'constructs';
import { configFromContext } from '../../cdk/config.ts';
import { preflight, type CheckStatus, type PreflightAws, type PreflightReport } from '../../pipeline/preflight.ts';
import { printable, table } from '../format.ts';
import { EMBEDDED_STACK } from '../../pipeline/aws/stack-handle.ts';
import { defaultWeightsDir } from '../../pipeline/aws/wiring.ts';
import { stackSelection } from '../stack.ts';

interface PreflightCli {
  stack?: string;
  region?: string;
  tiers?: string;
  context: string[];
  json?: boolean;
}

/** The deploy context: cdk.json's, then each -c key=value (as `cdk deploy` merges them). */
export function deployContext(cwd: string, pairs: readonly string[]): Record<string, string> {
  const file = join(cwd, 'cdk.json');
  const context: Record<string, string> = {};
  if (existsSync(file)) {
    const json = JSON.parse(readFileSync(file, 'utf8')) as { context?: Record<string, unknown> };
    for (const [k, v] of Object.entries(json.context ?? {})) if (k.startsWith('effitag:')) context[k] = String(v);
  }
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`-c ${pair}: expected key=value (e.g. -c effitag:bucketName=my-photos)`);
    context[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return context;
}

const MARK: Record<CheckStatus, string> = { ok: 'ok', missing: 'MISSING', unknown: 'UNKNOWN', warn: 'warn', skipped: 'skipped' };

export function formatReport(report: PreflightReport): string {
  const rows = report.rows.flatMap((r) => [
    [r.check, r.subject, MARK[r.status], r.detail],
    ...(r.fix && r.status !== 'ok' ? [['', '', '', `→ ${r.fix}`]] : []),
  ]);
  const problems = report.rows.filter((r) => r.status === 'missing' || r.status === 'unknown').length;
  return [
    `preflight of stack ${printable(report.stack)}${report.deployed ? '' : ' (not deployed yet)'}\n`,
    table(rows, ['check', 'subject', 'status', 'detail']),
    report.ready ? 'ready: nothing missing\n' : `not ready: ${problems} item(s) missing or unknown\n`,
  ].join('');
}

/** Runs the checks and prints them; `aws` is replaceable for tests. Returns the exit code. */
export async function runPreflight(opts: PreflightCli, aws: PreflightAws, out: (s: string) => void, cwd = process.cwd()): Promise<number> {
  const context = deployContext(cwd, opts.context);
  if (opts.tiers) context['effitag:tiersFile'] = opts.tiers;
  const stackName = opts.stack ?? context['effitag:stackName'] ?? 'EffiTag';
  // The same validation as synthesis (cdk/config.ts): a context the deploy would refuse is refused here.
  const config = configFromContext({ tryGetContext: (key: string) => context[key] } as Node, cwd);
  const report = await preflight(aws, {
    stackName,
    tiers: config.tiers,
    tiersFile: opts.tiers ?? context['effitag:tiersFile'] ?? config.tiersFile,
    // The catalog `weights publish --tiers` reads without --weights ($EFFITAG_CACHE_DIR/weights): the fixes name it.
    weightsDir: resolve(defaultWeightsDir()),
    context: { bucketName: config.bucketName, prefixes: config.prefixes, events: config.events, index: config.index, vpcId: config.vpcId },
  });
  out(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.ready ? 0 : 1;
}

export function registerPreflightCommand(program: Command): void {
  program
    .command('preflight')
    .description(
      'what a deployed stack still lacks before the first upload (weights per model, GPU instance types in its zones, GPU vCPU and Lambda concurrency quotas), and before a deploy onto an existing bucket, the notification rules S3 would refuse; exit 1 when something is missing',
    )
    .option('--tiers <file>', 'the tiers file the stack is deployed with (default: context effitag:tiersFile, else tiers/defaults.json)')
    .option(
      '-c, --context <key=value>',
      'deploy context, as given to cdk deploy (e.g. -c effitag:bucketName=my-photos); cdk.json context first',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option('--json', 'print the report as JSON')
    .action(async (opts: PreflightCli, command: Command) => {
      // The program's --stack names the stack (context effitag:stackName, else EffiTag, when it names
      // none or the embedded one: preflight is about deploys); --region as everywhere.
      const { stack, region } = stackSelection(command);
      const deployed = { ...opts, stack: stack === EMBEDDED_STACK ? undefined : stack, region };
      // Loaded here: the EC2 client alone takes a while to import, and no other command needs these clients.
      const { awsPreflight } = await import('../../pipeline/aws/preflight-aws.ts');
      process.exitCode = await runPreflight(deployed, awsPreflight(region), (s) => process.stdout.write(s));
    });
}
