/**
 * The GPU worker container as ECS runs it, minus the GPU: the entry point bundled by the same script
 * the Dockerfile runs, beside a node_modules holding only what the image installs
 * (containers/gpu-worker/package-lock.json; tfjs-node-gpu itself cannot install here), the image's
 * ENV lines, the task definition's environment (resolved) and credentials of the task role's own.
 * EFFITAG_ENGINE=ort runs it on the CPU engine; everything else is as deployed.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GPU_WORKER_DOCKERFILE, REPO_ROOT } from '../../cdk/constructs/bundling.ts';
import { copyTree } from './lambda.ts';
import { runTemp } from './paths.ts';
import type { Assembly } from './template.ts';
import { CREDENTIALS, WEIGHTS_RECHECK_SECONDS, type World } from './world.ts';

/** Packages the image installs that cannot install here (their install downloads libtensorflow). */
const NOT_INSTALLABLE_HERE = ['@tensorflow/tfjs-node-gpu'];

/** The image's node_modules closure from its lockfile, without the packages only the excluded ones need. */
export function imageModules(
  lockFile = join(REPO_ROOT, 'containers', 'gpu-worker', 'package-lock.json'),
): { name: string; version: string; optional: boolean }[] {
  const lock = JSON.parse(readFileSync(lockFile, 'utf8')) as {
    packages: Record<
      string,
      { version?: string; dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; optional?: boolean }
    >;
  };
  const entries = lock.packages;
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name) || NOT_INSTALLABLE_HERE.includes(name)) return;
    const entry = entries[`node_modules/${name}`];
    if (!entry) return;
    seen.add(name);
    for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) visit(dep);
  };
  for (const dep of Object.keys(entries['']?.dependencies ?? {})) visit(dep);
  return [...seen].sort().map((name) => ({
    name,
    version: entries[`node_modules/${name}`].version!,
    optional: entries[`node_modules/${name}`].optional === true,
  }));
}

/** The ENV lines of the Dockerfile's final stage. */
export function dockerfileEnv(dockerfile = join(REPO_ROOT, GPU_WORKER_DOCKERFILE)): Record<string, string> {
  const text = readFileSync(dockerfile, 'utf8').replace(/\\\n/g, ' ');
  const lastStage = text.slice(text.lastIndexOf('\nFROM '));
  const env: Record<string, string> = {};
  for (const line of lastStage.split('\n').filter((l) => l.startsWith('ENV '))) {
    for (const m of line.slice(4).matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '');
  }
  return env;
}

let bundled: Promise<string> | undefined;
/** The entry point, bundled once per run by the script the Dockerfile runs (every task's is the same). */
function gpuBundle(): Promise<string> {
  bundled ??= (async () => {
    const dir = join(runTemp('gpu-bundle-'), 'app');
    await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'scripts', 'bundle-gpu-worker.mjs'), dir], { cwd: REPO_ROOT });
    return dir;
  })();
  return bundled;
}

export interface Container {
  taskDefinitionId: string;
  roleId: string;
  auditLog: string;
  output(): string;
  /** null while it runs. */
  exitCode(): number | null;
  /** SIGTERM, as ECS stops a task; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: the task dies mid-work (an instance lost, the OOM killer). */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

export async function startGpuContainer(
  assembly: Assembly,
  world: World,
  taskDefinitionId: string,
  extraEnv: Record<string, string> = {},
): Promise<Container> {
  const def = assembly.template.Resources[taskDefinitionId].Properties!;
  const container = def.ContainerDefinitions[0];
  const roleId = def.TaskRoleArn['Fn::GetAtt'][0] as string;
  const root = runTemp(`task-${taskDefinitionId}-`);
  const app = join(root, 'app');
  copyTree(await gpuBundle(), app);
  for (const m of imageModules()) {
    const from = join(REPO_ROOT, 'node_modules', m.name);
    if (!existsSync(from)) {
      if (m.optional) continue; // another platform's binary
      throw new Error(`the image installs ${m.name}@${m.version}, which the repository's node_modules lacks`);
    }
    const installed = JSON.parse(readFileSync(join(from, 'package.json'), 'utf8')).version;
    if (installed !== m.version) throw new Error(`the image pins ${m.name}@${m.version}; the repository has ${installed}`);
    copyTree(from, join(app, 'node_modules', m.name));
  }
  const varDir = join(root, 'var');
  mkdirSync(varDir, { recursive: true });
  const auditLog = join(root, 'audit.jsonl');
  const taskEnv = Object.fromEntries(
    (container.Environment as { Name: string; Value: unknown }[]).map((e) => [e.Name, String(world.resolver.resolve(e.Value))]),
  );
  const env: Record<string, string> = {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: root,
    ...dockerfileEnv(),
    ...taskEnv,
    AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    AWS_ENDPOINT_URL_S3: world.s3Endpoint,
    AWS_ENDPOINT_URL_SQS: world.sqsEndpoint,
    AWS_ENDPOINT_URL_DYNAMODB: world.dynamoEndpoint,
    AWS_ENDPOINT_URL_S3VECTORS: world.s3vectorsEndpoint,
    EFFITAG_AUDIT_LOG: auditLog,
    EFFITAG_WEIGHTS_RECHECK_SECONDS: String(WEIGHTS_RECHECK_SECONDS),
    // No GPU here: the tier's engine is replaced by the CPU one.
    EFFITAG_ENGINE: 'ort',
    ...extraEnv,
  };
  // The image's paths: /app is the bundle's directory, /var the task's own.
  for (const [k, v] of Object.entries(env)) {
    if (v.startsWith('/var/')) env[k] = join(varDir, v.slice(5));
    if (v.startsWith('/app/')) env[k] = join(app, v.slice(5));
  }
  const child: ChildProcess = spawn(
    process.execPath,
    ['--require', join(import.meta.dirname, 'resolve-localhost.cjs'), '--enable-source-maps', 'worker.mjs'],
    { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout!.on('data', (d) => {
    output += d;
  });
  child.stderr!.on('data', (d) => {
    output += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    taskDefinitionId,
    roleId,
    auditLog,
    exited,
    output: () => output,
    exitCode: () => child.exitCode ?? (child.signalCode ? -1 : null),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
