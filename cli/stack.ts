/**
 * The program-level stack options every command shares: `--stack NAME` (env EFFITAG_STACK; default
 * the embedded stack that `npm start` runs), and `--region`/`--profile` as the AWS CLI has them
 * (env AWS_REGION, AWS_PROFILE). A command asks for its stack here and gets one handle
 * (pipeline/aws/stack-handle.ts): no command has a flag of its own for endpoints, queues or tables.
 */
import { type Command, Option } from 'commander';
import { S3VectorIndex } from '../pipeline/aws/s3-vectors.ts';
import {
  EMBEDDED_SILENCE_MS,
  EMBEDDED_STACK,
  type OpenStack,
  openStack,
  resolveStackHandle,
  type StackHandle,
  type StackSelection,
  vectorsClientFor,
} from '../pipeline/aws/stack-handle.ts';
import type { VectorIndex } from '../pipeline/ports.ts';

/**
 * `inTask`: the program runs inside a deployed task (the GPU image's `train.mjs`), where no stack named
 * means the task's own stack, read from its environment (see `StackSelection.inTask`).
 */
export function addStackOptions(program: Command, options: { inTask?: boolean } = {}): Command {
  if (options.inTask) program.setOptionValue('inTask', true);
  return program
    .addOption(
      new Option(
        '--stack <name>',
        `the stack to work on: "${EMBEDDED_STACK}" (npm start's, found through its data directory, EFFITAG_DATA_DIR) or a deployed stack's CloudFormation name, whose outputs say the rest`,
      ).env('EFFITAG_STACK'),
    )
    .addOption(new Option('--region <region>', "AWS region of a deployed stack (as the AWS CLI: default AWS_REGION, or the profile's)"))
    .addOption(new Option('--profile <name>', 'AWS CLI profile for a deployed stack (default AWS_PROFILE)'))
    .hook('preAction', (_program, action) => {
      // As the AWS CLI's: every SDK client of the command (Step Functions, preflight's) honours them.
      const { region, profile } = stackSelection(action);
      if (region) process.env.AWS_REGION = region;
      if (profile) process.env.AWS_PROFILE = profile;
    });
}

/** The program-level selection, whichever subcommand `command` is. */
export function stackSelection(command: Command): StackSelection {
  const o = command.optsWithGlobals() as StackSelection;
  return { stack: o.stack, region: o.region, profile: o.profile, ...(o.inTask ? { inTask: true } : {}) };
}

/** The handle of the stack the command line names. */
export function commandStack(command: Command): Promise<StackHandle> {
  return resolveStackHandle(stackSelection(command));
}

/** The stack the command line names, opened; the caller closes it. */
export async function openCommandStack(command: Command): Promise<OpenStack> {
  const handle = await commandStack(command);
  // A frozen embedded stack fails the command in one line within ~30 s (not AWS's minutes).
  return openStack(handle, handle.kind === 'embedded' ? { embeddedSilenceMs: EMBEDDED_SILENCE_MS } : {});
}

/** `--stack …` (and region, profile) as given, to pass on to another `effitag` command line. */
export function stackArgs(command: Command): string[] {
  const s = stackSelection(command);
  return [
    ...(s.stack ? ['--stack', s.stack] : []),
    ...(s.region ? ['--region', s.region] : []),
    ...(s.profile ? ['--profile', s.profile] : []),
  ];
}

/**
 * The stack's vector index (an open stack that carries one, or its vector bucket), or undefined when
 * it keeps none. Reading (similar, dupes, the gallery), a missing index is "no vectors of that model",
 * never created; writing (`backfill --embeddings`), a model's index is created on first use, as the
 * worker's is.
 */
export function stackVectors(conn: OpenStack, mode: 'read' | 'write' = 'read'): VectorIndex | undefined {
  const { handle } = conn;
  // openStack's (the runtimes' too) creates no index on a deployed stack; a writing command may.
  if (conn.vectors && (mode === 'read' || handle.kind === 'embedded')) return conn.vectors;
  if (!handle.vectorBucket) return undefined;
  return new S3VectorIndex({ client: vectorsClientFor(handle), vectorBucket: handle.vectorBucket, createIndexes: mode === 'write' });
}
