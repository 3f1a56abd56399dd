/**
 * A command that needs AWS, run with no region or no credentials: the AWS SDK's own messages
 * ("Region is missing", "Could not load credentials from any providers") say neither which command
 * failed for that nor how to fix it. The CLI prints one line, exit 1, naming the fix.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { awsHint } from '../cli/aws-hints.ts';
import { tempDir } from './support/fixtures.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', 'bin', 'effitag.js');

/** This process's environment without any AWS setting, and no config/credentials files or instance metadata. */
async function noAwsEnv(extra: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> {
  const home = await tempDir('effitag-no-aws-');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('EFFITAG_')) env[k] = v;
  return {
    ...env,
    HOME: home,
    AWS_CONFIG_FILE: join(home, 'none'),
    AWS_SHARED_CREDENTIALS_FILE: join(home, 'none'),
    AWS_EC2_METADATA_DISABLED: 'true',
    ...extra,
  };
}

async function failing(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [BIN, ...args], { env, timeout: 120_000 });
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
  assert.fail(`effitag ${args.join(' ')} succeeded with no AWS settings`);
}

describe('AWS commands with no region or credentials', () => {
  it('the hint names the fix for the SDK errors, and leaves other messages alone', () => {
    assert.match(awsHint(new Error('Region is missing')) ?? '', /--region/);
    const creds = Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' });
    assert.match(awsHint(creds) ?? '', /AWS_PROFILE/);
    assert.equal(awsHint(new Error('The specified bucket does not exist')), undefined);
  });

  it('preflight with no region: one line naming --region and AWS_REGION, exit 1, no stack trace', async () => {
    const { code, stderr } = await failing(['preflight'], await noAwsEnv());
    assert.equal(code, 1);
    assert.equal(stderr.trim().split('\n').length, 1, stderr);
    assert.match(stderr, /^effitag: .*Region is missing.*--region.*AWS_REGION/, stderr);
    assert.doesNotMatch(stderr, /\n\s+at /);
  });

  it('preflight with a region and no credentials: one line naming how to give credentials, exit 1', async () => {
    const { code, stderr } = await failing(['preflight', '--region', 'eu-west-1'], await noAwsEnv());
    assert.equal(code, 1);
    assert.equal(stderr.trim().split('\n').length, 1, stderr);
    assert.match(stderr, /^effitag: .*credentials.*AWS_PROFILE.*aws configure/, stderr);
  });
});
