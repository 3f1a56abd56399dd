/**
 * One stack handle (issue 22): the three resolvers (a runtime's environment, a deployed stack's
 * CloudFormation outputs, the embedded stack's handle file), `--stack` on the CLI, and the two flows
 * it is for: `effitag search --stack NAME` against a deployed stack with no other stack flag, and
 * `npm start` on other ports followed by `effitag tag` with no port flag.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync, chmodSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../cli/program.ts';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { dynamoClient } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { ensureEmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import {
  EMBEDDED_STACK,
  handleFromEnvironment,
  handleFromOutputs,
  openStack,
  resolveDeployedStack,
  resolveEmbeddedStack,
  resolveStackHandle,
  StackNotRunningError,
  stackFile,
  stackTiers,
  writeStackFile,
} from '../pipeline/aws/stack-handle.ts';
import { encodeStackEnv } from '../pipeline/runtime-config.ts';
import { parseTiers } from '../tiers/schema.ts';
import { startCloudFormation, type CloudFormationStandIn } from './rehearsal/cloudformation.ts';
import { freePort, runEffitag, startLocal } from './support/effitag-local.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { standInHandle } from './support/local-stack.ts';
import { synthStack } from './support/synth.ts';

const TIERS = parseTiers(JSON.parse(readFileSync('tiers/local.json', 'utf8')));

const OUTPUTS = {
  BucketName: 'photos-bucket',
  WeightsLocation: 's3://photos-weights/models/',
  IntakeQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/111111111111/Photos-Intake',
  QueueUrls: JSON.stringify({ cpu: 'https://sqs.eu-west-1.amazonaws.com/111111111111/Photos-cpu.fifo' }),
  IndexTable: 'Photos-Index',
  BackfillStateMachine: 'arn:aws:states:eu-west-1:111111111111:stateMachine:Photos-Backfill',
  DashboardName: 'Photos',
  VectorBucket: 'photos-vectors',
};

describe('stack handle: resolvers', () => {
  it("a deployed stack's outputs make its handle; an output missing or garbled is named", () => {
    const h = handleFromOutputs('Photos', OUTPUTS, { region: 'eu-west-1', profile: 'work' });
    assert.deepEqual(
      {
        kind: h.kind,
        buckets: h.buckets,
        weights: h.weightsLocation,
        intake: h.intake?.url,
        tiers: Object.keys(h.tierQueues),
        table: h.indexTable,
        sm: h.backfillStateMachine,
        region: h.region,
        profile: h.profile,
        endpoints: h.endpoints,
        vectors: h.vectorBucket,
      },
      {
        kind: 'deployed',
        buckets: ['photos-bucket'],
        weights: 's3://photos-weights/models/',
        intake: OUTPUTS.IntakeQueueUrl,
        tiers: ['cpu'],
        table: 'Photos-Index',
        sm: OUTPUTS.BackfillStateMachine,
        region: 'eu-west-1',
        profile: 'work',
        endpoints: {},
        vectors: 'photos-vectors',
      },
    );
    const { BucketName: _, ...noBucket } = OUTPUTS;
    assert.throws(() => handleFromOutputs('Photos', noBucket), /stack Photos: its outputs lack or garble BucketName/);
    assert.throws(() => handleFromOutputs('Photos', { ...OUTPUTS, QueueUrls: '[1' }), /QueueUrls is not a JSON object/);
    // A stack deployed without an index has no IndexTable output: no index, and a clear error where one is needed.
    const { IndexTable: __, ...noIndex } = OUTPUTS;
    const open = openStack(handleFromOutputs('Photos', noIndex));
    try {
      assert.equal(open.index, undefined);
      assert.throws(() => open.requireIndex(), /stack Photos has no tag index/);
    } finally {
      open.close();
    }
  });

  it("a deployed stack's tiers come from its output Tiers: the synthesized stack's own, read back whole", () => {
    const { config, template } = synthStack();
    const outputs = (template.toJSON() as { Outputs: Record<string, { Value: unknown }> }).Outputs;
    assert.equal(typeof outputs.Tiers.Value, 'string', 'a literal, not a token');
    const h = handleFromOutputs('EffiTag', { ...OUTPUTS, Tiers: outputs.Tiers.Value as string });
    assert.deepEqual(stackTiers(h).config.input, config.tiers.input);
    // A stack deployed before the output: a command that needs its tiers says how to give them.
    const old = handleFromOutputs('Old', OUTPUTS);
    const saved = process.env.EFFITAG_TIERS_FILE;
    delete process.env.EFFITAG_TIERS_FILE;
    try {
      assert.throws(() => stackTiers(old), /stack Old: which tiers file was it deployed with\? pass --tiers FILE/);
    } finally {
      if (saved !== undefined) process.env.EFFITAG_TIERS_FILE = saved;
    }
    assert.throws(() => handleFromOutputs('Photos', { ...OUTPUTS, Tiers: '{' }), /its output Tiers is not JSON/);
  });

  it("--profile as the AWS CLI has it: the clients take the profile's region unless one is named", async () => {
    const config = join(await tempDir('effitag-aws-config-'), 'config');
    writeFileSync(config, '[profile work]\nregion = ap-south-1\n');
    const saved = {
      AWS_REGION: process.env.AWS_REGION,
      AWS_CONFIG_FILE: process.env.AWS_CONFIG_FILE,
      AWS_PROFILE: process.env.AWS_PROFILE,
    };
    delete process.env.AWS_REGION;
    delete process.env.AWS_PROFILE;
    process.env.AWS_CONFIG_FILE = config;
    const profiled = openStack(handleFromOutputs('Photos', OUTPUTS, { profile: 'work' }));
    const named = openStack(handleFromOutputs('Photos', OUTPUTS, { profile: 'work', region: 'eu-west-1' }));
    try {
      assert.equal(await profiled.s3.config.region(), 'ap-south-1');
      assert.equal(await profiled.dynamo.config.region(), 'ap-south-1');
      assert.equal(await named.sqs.config.region(), 'eu-west-1');
    } finally {
      profiled.close();
      named.close();
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
  });

  it("a runtime's environment (the CDK contract) makes its handle: queues, index, weights, tiers", () => {
    const [tier] = Object.keys(TIERS.tiers);
    const env = {
      ...encodeStackEnv({
        tiers: TIERS,
        queueUrlsJson: JSON.stringify({ [tier]: 'https://sqs/q-cpu.fifo' }),
        weightsLocation: 's3://w/m/',
        indexTable: 'T',
        vectorBucket: 'V',
      }),
      AWS_REGION: 'eu-central-1',
    };
    const h = handleFromEnvironment(env);
    assert.equal(h.kind, 'runtime');
    assert.deepEqual(h.tierQueues, { [tier]: { url: 'https://sqs/q-cpu.fifo' } });
    assert.equal(h.indexTable, 'T');
    assert.equal(h.vectorBucket, 'V');
    assert.equal(h.weightsLocation, 's3://w/m/');
    assert.equal(h.region, 'eu-central-1');
    assert.deepEqual(stackTiers(h).config.input, TIERS.input);
    const open = openStack(h);
    try {
      assert.deepEqual(Object.keys(open.queues), [tier]);
      assert.equal(open.queues[tier].url, 'https://sqs/q-cpu.fifo');
      assert.ok(open.index);
    } finally {
      open.close();
    }
  });

  it("inside a deployed task (the GPU image's train.mjs), no stack named means the task's own, from its environment; a named one is still looked up", async () => {
    const [tier] = Object.keys(TIERS.tiers);
    const env = {
      ...encodeStackEnv({
        tiers: TIERS,
        queueUrlsJson: JSON.stringify({ [tier]: 'https://sqs/q.fifo' }),
        weightsLocation: 's3://w/m/',
        indexTable: 'T',
      }),
      AWS_REGION: 'eu-central-1',
      EFFITAG_DATA_DIR: join(await tempDir('effitag-task-'), 'data'),
    };
    const h = await resolveStackHandle({ inTask: true }, env);
    assert.equal(h.kind, 'runtime');
    assert.equal(h.indexTable, 'T');
    // Outside a task the same environment means the embedded stack (none running here).
    await assert.rejects(resolveStackHandle({}, env), StackNotRunningError);
    // A stack named on the command line wins over the task's own (its outputs read from CloudFormation).
    await assert.rejects(
      resolveStackHandle({ inTask: true, stack: 'Other' }, { ...env, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' }),
      (err: Error) => !(err instanceof StackNotRunningError),
    );
    // The container's entry asks for it.
    assert.match(readFileSync('containers/gpu-worker/train.ts', 'utf8'), /addStackOptions\(program, \{ inTask: true \}\)/);
  });

  it('the embedded stack is found through the handle file in its data directory (owner-only); none, stale or garbled: one clear line', async () => {
    const dataDir = join(await tempDir('effitag-handle-'), 'data');
    const credentials = ensureEmbeddedCredentials(dataDir);
    assert.throws(
      () => resolveEmbeddedStack(dataDir),
      (err: Error) =>
        err instanceof StackNotRunningError &&
        /^no embedded stack is running for .*data \(no \.effitag-stack\.json there\): start it \(npm start\)/.test(err.message) &&
        !err.message.includes('\n'),
    );
    const written = standInHandle(dataDir, { credentials, s3: 'http://127.0.0.1:1111', sqs: 'http://127.0.0.1:2222', buckets: ['b'] });
    assert.equal(statSync(stackFile(dataDir)).mode & 0o777, 0o600, 'owner-only: it holds the key pair');
    const read = resolveEmbeddedStack(dataDir);
    assert.equal(read.name, EMBEDDED_STACK);
    assert.deepEqual(read.endpoints, written.endpoints);
    assert.deepEqual(read.credentials, credentials);
    // Selected by default, through EFFITAG_DATA_DIR, as the CLI selects it.
    assert.deepEqual((await resolveStackHandle({}, { EFFITAG_DATA_DIR: dataDir })).endpoints, written.endpoints);
    // A handle others could read is tightened on read.
    chmodSync(stackFile(dataDir), 0o644);
    resolveEmbeddedStack(dataDir);
    assert.equal(statSync(stackFile(dataDir)).mode & 0o777, 0o600);
    // Stale: the process that wrote it is gone (a crash, kill -9).
    const dead = 2 ** 22 + 12_345; // above Linux's pid_max default: no such process
    writeStackFile(dataDir, written, dead);
    assert.throws(
      () => resolveEmbeddedStack(dataDir),
      new RegExp(`the embedded stack for .*data is not running \\(its handle names process ${dead}, .*which has exited\\): start it again`),
    );
    writeFileSync(stackFile(dataDir), '{"pid": 1}');
    assert.throws(() => resolveEmbeddedStack(dataDir), /is not an embedded-stack handle; delete it and start the stack again/);
  });
});

describe('--stack NAME: a deployed stack by its name, its outputs read from CloudFormation', () => {
  let cfn: CloudFormationStandIn;
  let dataDir: string;
  const stops: (() => Promise<unknown>)[] = [];
  let env: NodeJS.ProcessEnv;

  before(async () => {
    // "AWS": a DynamoDB and a CloudFormation that the SDK reaches through AWS_ENDPOINT_URL_*, as the
    // deploy rehearsal's runtimes do; credentials from the environment, as on a user's machine.
    const keys = ensureEmbeddedCredentials(join(await tempDir('effitag-aws-keys-'), 'keys'));
    const dynamo = await startDynamoServer({ credentials: keys });
    stops.push(() => dynamo.close());
    const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials: keys });
    await ensureIndexTable(ddb, OUTPUTS.IndexTable);
    const index = new DynamoTagIndex(ddb, OUTPUTS.IndexTable);
    for (const [key, tag] of [
      ['cats/a.jpg', 'tabby'],
      ['dogs/b.jpg', 'golden retriever'],
    ] as const)
      await index.put({
        bucket: OUTPUTS.BucketName,
        key,
        eTag: `e-${key}`,
        lastModified: new Date(Date.UTC(2026, 0, 2)),
        size: 1,
        variant: 'b0',
        marker: 'b0@test',
        at: new Date().toISOString(),
        tags: [{ tag, probability: 0.9, leaf: true }],
      });
    ddb.destroy();
    cfn = await startCloudFormation({ Photos: OUTPUTS });
    stops.push(() => cfn.close());
    // No embedded stack anywhere: the data directory is empty.
    dataDir = join(await tempDir('effitag-no-stack-'), 'data');
    env = {
      EFFITAG_DATA_DIR: dataDir,
      AWS_ENDPOINT_URL_CLOUDFORMATION: cfn.endpoint,
      AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
      AWS_ACCESS_KEY_ID: keys.accessKeyId,
      AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
      AWS_REGION: 'eu-west-1',
    };
  });
  after(async () => {
    for (const s of stops) await s().catch(() => {});
  });

  it('`effitag search --stack Photos` finds by tag with no other stack flag; EFFITAG_STACK does the same', async () => {
    const r = await runEffitag(['search', '--stack', 'Photos', `s3://${OUTPUTS.BucketName}`, '--tag', 'golden retriever', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      JSON.parse(r.stdout).hits.map((h: { key: string }) => h.key),
      ['dogs/b.jpg'],
    );
    assert.deepEqual(cfn.asked, ['Photos'], 'the outputs were read from CloudFormation, once');
    // Program-level: before the command as well as after it, or from the environment.
    const before = await runEffitag(['--stack', 'Photos', 'search', `s3://${OUTPUTS.BucketName}`, '--tag', 'tabby', '--json'], env);
    assert.deepEqual(
      JSON.parse(before.stdout).hits.map((h: { key: string }) => h.key),
      ['cats/a.jpg'],
    );
    const fromEnv = await runEffitag(['search', `s3://${OUTPUTS.BucketName}`, '--tag', 'tabby', '--json'], {
      ...env,
      EFFITAG_STACK: 'Photos',
    });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.equal(JSON.parse(fromEnv.stdout).hits.length, 1);
  });

  it('a stack that does not exist, or no embedded stack running: one line saying what to do', async () => {
    const none = await runEffitag(['search', '--stack', 'Nope', `s3://${OUTPUTS.BucketName}`, '--tag', 'dog'], env);
    assert.equal(none.code, 1);
    assert.equal(
      none.stderr,
      'effitag: no stack Nope in eu-west-1: deploy it (npx cdk deploy), or check --stack, --region and --profile\n',
    );
    await assert.rejects(
      resolveDeployedStack('Nope', {}, async () => undefined),
      /no stack Nope: deploy it/,
    );
    const embedded = await runEffitag(['search', `s3://${OUTPUTS.BucketName}`, '--tag', 'dog'], env);
    assert.equal(embedded.code, 1);
    assert.match(
      embedded.stderr,
      /^effitag: no embedded stack is running for .*: start it \(npm start\), set EFFITAG_DATA_DIR .*--stack NAME\n$/,
    );
  });

  it("the per-command stack flags are gone from every command; the stack options are the program's", async () => {
    const gone = [
      '--aws',
      '--endpoint',
      '--sqs-endpoint',
      '--dynamodb-endpoint',
      '--table',
      '--queue-urls',
      '--intake-url',
      '--state-machine',
      '--backfill-state-machine',
      '--stack',
      '--region',
      '--profile',
    ];
    const program = buildProgram();
    assert.deepEqual(
      program.options.map((o) => o.long).filter((o) => gone.includes(o!)),
      ['--stack', '--region', '--profile'],
    );
    const offending: string[] = [];
    const walk = (c: Command, path: string) => {
      for (const sub of c.commands) {
        const name = `${path} ${sub.name()}`.trim();
        if (sub.commands.length) walk(sub, name);
        for (const o of sub.options) if (gone.includes(o.long!)) offending.push(`${name} ${o.long}`);
      }
    };
    walk(program, '');
    assert.deepEqual(offending, []);
    const r = await runEffitag(['search', `s3://${OUTPUTS.BucketName}`, '--aws'], env);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.startsWith("error: unknown option '--aws'"), r.stderr);
  });
});

describe('--json on every command that prints results', () => {
  it('every command but the two servers (local, gallery) takes --json', () => {
    const servers = ['local', 'gallery'];
    const without: string[] = [];
    const walk = (c: Command, path: string) => {
      for (const sub of c.commands) {
        const name = `${path} ${sub.name()}`.trim();
        if (sub.commands.length) walk(sub, name);
        else if (!servers.includes(name) && !sub.options.some((o) => o.long === '--json')) without.push(name);
      }
    };
    walk(buildProgram(), '');
    assert.deepEqual(without, []);
  });

  it('`tiers validate --json` says valid or not, with the issues, and exits 1 when not', async () => {
    const ok = await runEffitag(['tiers', 'validate', 'tiers/local.json', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).valid, true);
    const file = join(await tempDir('effitag-tiers-json-'), 'bad.json');
    await writeFile(file, JSON.stringify({ version: 1, tiers: {}, routing: { default: { tier: 'nope' } } }));
    const bad = await runEffitag(['tiers', 'validate', file, '--json']);
    assert.equal(bad.code, 1);
    const report = JSON.parse(bad.stdout);
    assert.equal(report.valid, false);
    assert.ok(
      report.issues.some((i: { severity: string }) => i.severity === 'error'),
      bad.stdout,
    );
  });
});

describe('npm start on other ports, then `effitag tag` with no port flags', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it("tags through the stack's handle; once the stack stops, says so instead of timing out", async () => {
    const dir = await tempDir('effitag-other-ports-');
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const ports = { s3: await freePort(), sqs: await freePort(), dynamodb: await freePort() };
    const stack = await startLocal(dir, ports, {}, children);
    const handle = JSON.parse(readFileSync(stackFile(join(dir, 'data')), 'utf8'));
    assert.equal(handle.pid, stack.pid);
    assert.equal(handle.handle.endpoints.s3, `http://127.0.0.1:${ports.s3}`);
    assert.equal(handle.handle.endpoints.sqs, `http://127.0.0.1:${ports.sqs}`);
    // The banner needs no port variables for another shell: the data directory says it all.
    assert.doesNotMatch(stack.output(), /EFFITAG_(S3|SQS|DYNAMODB)_PORT/);
    assert.match(stack.output(), /EFFITAG_DATA_DIR=/);

    const photo = join(dir, 'photo.jpg');
    await writeFile(photo, await gradientImage(200, 160, 'jpeg', 5));
    const env = { EFFITAG_DATA_DIR: join(dir, 'data') };
    const tagged = await runEffitag(['tag', photo, '--json', '--timeout', '60'], env);
    assert.equal(tagged.code, 0, tagged.stderr);
    const result = JSON.parse(tagged.stdout.trim());
    assert.equal(result.object, 's3://effitag-local/uploads/photo.jpg');
    assert.equal(result.status, 'tagged');

    const exited = new Promise((r) => stack.once('exit', r));
    stack.kill('SIGTERM');
    await exited;
    assert.equal(existsSync(stackFile(join(dir, 'data'))), false, 'the handle is removed at stop');
    const after = await runEffitag(['tag', photo, '--timeout', '5'], env);
    assert.equal(after.code, 1);
    assert.match(after.stderr, /^effitag: no embedded stack is running for .*data/);
  });
});
