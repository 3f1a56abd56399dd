import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveEmbeddedStack, type StackHandle } from '../pipeline/aws/stack-handle.ts';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { writeArtifact } from '../model/weights.ts';
import { portFlags } from '../test/support/local-stack.ts';

export interface BenchContext {
  workDir: string;
  log: (line: string) => void;
}

/** CPU time of this process (all threads: onnxruntime's, libvips') since `from`, in ms. */
export function cpuMsSince(from: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(from);
  return (c.user + c.system) / 1000;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * The CPU's int8-relevant instruction sets, from /proc/cpuinfo (Linux; empty elsewhere): int8 speed
 * depends on them (VNNI's VPDPBUSD, AMX tiles), and two hosts of this project have differed, so every
 * int8 figure records the machine's.
 */
export function int8CpuFeatures(): string[] {
  const wanted = ['avx2', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'amx_int8', 'amx_tile'];
  try {
    const flags = new Set(/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1].trim().split(/\s+/) ?? []);
    return wanted.filter((f) => flags.has(f));
  } catch {
    return [];
  }
}

/** The benchmarks' configuration: one tier of one variant (B0 unless said) on the CPU engine. */
export function benchTiers(batchSize: number, variant = 'b0') {
  return {
    version: 1 as const,
    tiers: {
      bench: { variants: [variant], compute: { target: 'lambda-cpu' as const, memoryMb: 3538 }, engine: 'ort' as const, batchSize },
    },
    routing: { default: { tier: 'bench' } },
  };
}

/** Random weights as a catalog `<dir>/<variant>/` (speed does not depend on the values). */
export async function writeBenchWeights(dir: string, variant = 'b0'): Promise<string> {
  const plan = planModel(variant);
  await writeArtifact(join(dir, variant), plan, randomWeights(plan, 1), { kind: 'random', note: 'benchmark' });
  return dir;
}

export interface StackProcess {
  /** The stack's handle, as `effitag` commands find it (its data directory's handle file). */
  handle: StackHandle;
  /** The process's CPU time so far (utime + stime), ms. */
  cpuMs(): number;
  stop(): Promise<void>;
}

/**
 * The embedded stack as its own process (`effitag local`, as a user runs it), optionally pinned to
 * some cores with taskset. `args` adds flags (`--no-router`, `--no-workers`, …).
 */
export async function spawnLocalStack(
  ctx: BenchContext,
  o: { weightsDir: string; tiers: object; args: string[]; cpus?: string },
): Promise<StackProcess> {
  const tiersFile = join(ctx.workDir, 'stack-tiers.json');
  await writeFile(tiersFile, JSON.stringify(o.tiers));
  const s3Port = 45000 + Math.floor(Math.random() * 1000),
    sqsPort = s3Port + 1000,
    dynamoPort = s3Port + 2000;
  const command = [
    process.execPath,
    'bin/effitag.js',
    'local',
    ...o.args,
    '--data',
    join(ctx.workDir, `s3-${s3Port}`),
    '--weights',
    o.weightsDir,
    '--tiers',
    tiersFile,
    ...portFlags({ s3: s3Port, sqs: sqsPort, dynamodb: dynamoPort }),
    '--log-level',
    'warn',
  ];
  const child = o.cpus
    ? spawn('taskset', ['-c', o.cpus, ...command], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('is running')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`effitag local exited (${code})`)));
  });
  return {
    handle: resolveEmbeddedStack(join(ctx.workDir, `s3-${s3Port}`)),
    cpuMs() {
      // taskset execs node in place, so the pid is the stack's either way.
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(stat[11]) + Number(stat[12])) * 10; // clock ticks (100 Hz) → ms
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}
