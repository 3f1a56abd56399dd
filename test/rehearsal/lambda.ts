/**
 * A Node Lambda function as AWS runs it: its code asset copied out of cdk.out into an empty task
 * root, its layers' contents under an /opt stand-in, NODE_PATH as Lambda sets it, the environment
 * from the template (resolved), AWS's standard variables, and credentials of the function's own.
 * Started in a child process (lambda-bootstrap.cjs), so a module the bundle or its layers lack fails
 * the cold start exactly as on Lambda.
 */
import { fork, execFileSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runTemp } from './paths.ts';
import type { Assembly } from './template.ts';
import { CREDENTIALS, WEIGHTS_RECHECK_SECONDS, type World } from './world.ts';

export interface LambdaFunction {
  logicalId: string;
  roleId: string;
  auditLog: string;
  /** Everything the function printed (its logs, as CloudWatch would have them). */
  output(): string;
  invoke<T = unknown>(event: unknown): Promise<T>;
  stop(): Promise<void>;
}

export class ColdStartError extends Error {}

/** Copy a directory tree, hard-linking files where the filesystem allows (layers are large). */
export function copyTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  try {
    execFileSync('cp', ['-al', `${from}/.`, to]);
  } catch {
    cpSync(from, to, { recursive: true });
  }
}

export interface StartLambdaOptions {
  /** Replace the function's layers (tests show a bundle failing without the module a layer gives). */
  layerDirs?: string[];
  /** Overrides on top of the template's environment (paths only: Lambda's /tmp is per sandbox). */
  env?: Record<string, string>;
}

export async function startLambda(
  assembly: Assembly,
  world: World,
  logicalId: string,
  options: StartLambdaOptions = {},
): Promise<LambdaFunction> {
  const fn = assembly.template.Resources[logicalId];
  const props = fn.Properties!;
  const root = runTemp(`lambda-${logicalId}-`);
  const taskRoot = join(root, 'var', 'task');
  const opt = join(root, 'opt');
  const sandboxTmp = join(root, 'tmp');
  copyTree(assembly.assetDir(logicalId), taskRoot);
  mkdirSync(opt, { recursive: true });
  mkdirSync(sandboxTmp, { recursive: true });
  const layerDirs = options.layerDirs ?? ((props.Layers ?? []) as { Ref: string }[]).map((l) => assembly.assetDir(l.Ref));
  for (const dir of layerDirs) copyTree(dir, opt);
  const roleId = (props.Role['Fn::GetAtt'] as string[])[0];
  const auditLog = join(root, 'audit.jsonl');
  const templateEnv = world.resolver.resolve(props.Environment?.Variables ?? {}) as Record<string, string>;
  // Lambda's /tmp is the sandbox's own: the template's /tmp paths point into this function's.
  for (const [k, v] of Object.entries(templateEnv)) if (v.startsWith('/tmp/')) templateEnv[k] = join(sandboxTmp, v.slice(5));
  const env: Record<string, string> = {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    LANG: 'en_US.UTF-8',
    TZ: ':UTC',
    HOME: sandboxTmp,
    LAMBDA_TASK_ROOT: taskRoot,
    _HANDLER: props.Handler,
    AWS_EXECUTION_ENV: `AWS_Lambda_${props.Runtime}`,
    AWS_LAMBDA_FUNCTION_NAME: logicalId,
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(props.MemorySize ?? 128),
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    NODE_PATH: [join(opt, 'nodejs', 'node24', 'node_modules'), join(opt, 'nodejs', 'node_modules'), taskRoot].join(':'),
    AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    // The only difference from AWS: where the SDK sends requests.
    AWS_ENDPOINT_URL_S3: world.s3Endpoint,
    AWS_ENDPOINT_URL_SQS: world.sqsEndpoint,
    AWS_ENDPOINT_URL_DYNAMODB: world.dynamoEndpoint,
    AWS_ENDPOINT_URL_S3VECTORS: world.s3vectorsEndpoint,
    EFFITAG_AUDIT_LOG: auditLog,
    EFFITAG_WEIGHTS_RECHECK_SECONDS: String(WEIGHTS_RECHECK_SECONDS),
    ...templateEnv,
    ...options.env,
  };
  const child: ChildProcess = fork(join(import.meta.dirname, 'lambda-bootstrap.cjs'), [], {
    cwd: taskRoot,
    env,
    execArgv: ['--enable-source-maps', '--require', join(import.meta.dirname, 'resolve-localhost.cjs')],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  child.stdout!.on('data', (d) => {
    output += d;
  });
  child.stderr!.on('data', (d) => {
    output += d;
  });
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) =>
      reject(new ColdStartError(`${logicalId} exited during cold start (code ${code}): ${output.slice(-2000)}`)),
    );
    child.on('message', (m: any) => {
      if (m.type === 'ready') {
        if (m.error) reject(new ColdStartError(`${logicalId} failed at cold start: ${m.error.name}: ${m.error.message}`));
        else resolve();
      } else if (m.type === 'result') {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.error) p?.reject(Object.assign(new Error(`${logicalId}: ${m.error.name}: ${m.error.message}`), { handlerError: m.error }));
        else p?.resolve(m.result);
      }
    });
  });
  child.on('exit', () => {
    for (const p of pending.values()) p.reject(new Error(`${logicalId} exited: ${output.slice(-2000)}`));
    pending.clear();
  });
  try {
    await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  let nextId = 0;
  const timeoutMs = Number(props.Timeout ?? 3) * 1000;
  return {
    logicalId,
    roleId,
    auditLog,
    output: () => output,
    invoke(event) {
      const id = ++nextId;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, event, deadline: Date.now() + timeoutMs });
      });
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * EffiTag's Node functions in the template. Not the CDK's own helpers: its inline Python notification
 * handler, and its Node custom resource providers (`Custom…Provider`, e.g. a bucket's auto-delete),
 * which run at deploy and destroy time on the Lambda runtime's bundled SDK, not on uploads.
 */
export function nodeFunctions(assembly: Assembly): string[] {
  return assembly
    .ofType('AWS::Lambda::Function')
    .filter(
      ([id, r]) =>
        String(r.Properties?.Runtime ?? '').startsWith('nodejs') && r.Metadata?.['aws:asset:path'] && !/^Custom.*Provider/.test(id),
    )
    .map(([id]) => id);
}
