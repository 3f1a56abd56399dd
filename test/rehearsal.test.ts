/**
 * The deploy rehearsal (test/rehearsal/): what `cdk synth` produced, run the way AWS runs it, and
 * every call each principal made checked against the template's IAM policies. Plus the two ways it
 * must fail: a bundle needing a module its layers lack, and a role lacking a permission a code path
 * uses.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { evaluateCalls } from './rehearsal/iam.ts';
import { ColdStartError, startLambda } from './rehearsal/lambda.ts';
import { runRehearsal, SCENARIO, type RehearsalReport } from './rehearsal/run.ts';
import { readAssembly } from './rehearsal/template.ts';
import { startWorld } from './rehearsal/world.ts';

describe('deploy rehearsal: the synthesized artifacts, run as AWS runs them', () => {
  let report: RehearsalReport;
  before(async () => { report = await runRehearsal(); });

  it('every Node Lambda cold-starts from its asset and its own layers alone, and the GPU task stops cleanly on SIGTERM', () => {
    assert.deepEqual(report.functions.map((f) => f.logicalId.replace(/[0-9A-F]{8}$/, '')).sort(), ['BackfillBatch', 'CpueconomyWorker', 'IngestRouter']);
    assert.equal(report.container.exitCode, 0, report.container.output.slice(-2000));
    assert.match(report.container.output, /"msg":"engine".*"engine":"ort"/, 'the container ran on the CPU engine');
  });

  it('upload → router bundle → tier queue → worker bundle (Lambda) or GPU container → metadata written', () => {
    const photo = report.objects[SCENARIO.photo];
    const catalog = report.objects[SCENARIO.catalog];
    assert.ok(typeof photo === 'object' && typeof catalog === 'object');
    assert.equal(photo['effitag-status'], 'tagged');
    assert.match(photo['effitag-model'], /^b0@[0-9a-f]{12}/);
    assert.ok(photo['effitag-tags'].split(';').length >= 1);
    assert.equal(catalog['effitag-status'], 'tagged', 'catalog/ routes to the GPU tier, whose container tagged it');
    const gpu = report.principals.find((p) => p.runs.startsWith('ECS task'))!;
    assert.ok(gpu.calls.some((c) => c.command === 'CopyObject' && c.input.Key === SCENARIO.catalog), 'the container wrote the catalog image');
    const worker = report.principals.find((p) => /CpueconomyWorker/.test(p.runs))!;
    assert.ok(worker.calls.some((c) => c.command === 'CopyObject' && c.input.Key === SCENARIO.photo), 'the worker Lambda wrote the photo');
    // The worker Lambda got FIFO batches as Lambda delivers them.
    assert.ok(report.workerInvocations.length > 0);
    for (const attribute of ['ApproximateReceiveCount', 'MessageDeduplicationId', 'MessageGroupId', 'SentTimestamp']) {
      assert.ok(report.workerInvocations.every((i) => i.attributes.includes(attribute)), `${attribute} in ${JSON.stringify(report.workerInvocations[0])}`);
    }
  });

  it('the failure paths end where they should: nothing in any DLQ', () => {
    assert.equal((report.objects[SCENARIO.broken] as Record<string, string>)['effitag-status'], 'failed');
    assert.equal(report.objects[SCENARIO.textFile] && (report.objects[SCENARIO.textFile] as Record<string, string>)['effitag-status'], undefined, 'a text file is left alone');
    assert.equal(report.objects[SCENARIO.deleted], 'missing');
    assert.equal(report.objects[SCENARIO.sseC], 'unreadable (SSE-C)');
    assert.deepEqual(Object.values(report.deadLetters), [0, 0, 0], JSON.stringify(report.deadLetters));
    // S3's s3:TestEvent and every upload event were handled without a failed batch item.
    assert.ok(report.routerInvocations.length > 0);
    assert.ok(report.routerInvocations.every((i) => i.failures === 0 && !i.error), JSON.stringify(report.routerInvocations));
  });

  it('a deleted object answers 404, because the router may list the bucket (else 403 and retries into the DLQ)', () => {
    const router = report.principals.find((p) => /IngestRouter/.test(p.runs))!;
    const get = router.calls.find((c) => c.command === 'GetObject' && c.input.Key === SCENARIO.deleted)!;
    assert.equal(get.status, 404);
    const list = router.verdicts.find((v) => v.action === 's3:ListBucket')!;
    assert.equal(list.result, 'Allowed');
    assert.deepEqual(list.context, { 's3:prefix': SCENARIO.deleted });
  });

  it('the backfill state machine: a start with no input uses the stack\'s bucket, lists it, and the legacy image is tagged', () => {
    assert.match(String(report.backfill.input.bucket), /^rh-bucket/);
    assert.ok(report.backfill.batches >= 1);
    const legacy = report.objects[SCENARIO.legacy] as Record<string, string>;
    assert.equal(legacy['effitag-status'], 'tagged');
    const listed = report.backfill.results.reduce((n: number, r) => n + (r as { listed: number }).listed, 0);
    assert.equal(listed, Object.values(SCENARIO).length - 1 /* the deleted one */);
  });

  it('IAM: every call every principal made is allowed by its policies in the template', () => {
    assert.deepEqual(report.denied.map((v) => `${v.role} ${v.action} ${v.resource} ${v.result}`), []);
    for (const p of report.principals) assert.ok(p.verdicts.length > 0, `${p.runs} made no calls`);
    const sm = report.principals.find((p) => p.runs.startsWith('state machine'))!;
    assert.deepEqual(sm.verdicts.map((v) => v.action), ['s3:ListBucket']);
  });

  it('IAM fails, naming action, resource and role, when a role lacks a permission a code path uses', async () => {
    const router = report.principals.find((p) => /IngestRouter/.test(p.runs))!;
    // The same template without the router's s3:ListBucket statement.
    const template = structuredClone(report.assembly.template);
    for (const r of Object.values(template.Resources)) {
      if (r.Type !== 'AWS::IAM::Policy') continue;
      r.Properties!.PolicyDocument.Statement = r.Properties!.PolicyDocument.Statement.filter((s: { Sid?: string }) => s.Sid !== 'SeeMissingObjects');
    }
    const verdicts = await evaluateCalls({ ...report.assembly, template }, report.resolver, router.role, router.calls, report.queueArnOfUrl);
    const denied = verdicts.filter((v) => v.result !== 'Allowed');
    assert.equal(denied.length, 1, JSON.stringify(denied));
    assert.equal(denied[0].action, 's3:ListBucket');
    assert.match(denied[0].resource, /^arn:aws:s3:::rh-bucket/);
    assert.equal(denied[0].role, router.role);
    assert.equal(denied[0].result, 'ImplicitlyDenied');
  });

  it('a bundle fails its cold start, naming the module, when its layers lack a module it needs', async () => {
    const assembly = readAssembly(report.assembly.outdir);
    const world = await startWorld(assembly);
    try {
      const workerId = report.functions.map((f) => f.logicalId).find((id) => id.startsWith('CpueconomyWorker'))!;
      await assert.rejects(startLambda(assembly, world, workerId, { layerDirs: [] }), (err: Error) =>
        err instanceof ColdStartError && /Cannot find module '(sharp|onnxruntime-node)'/.test(err.message));
      // With its layer it starts, and without its configuration it says which variable is missing.
      const fn = await startLambda(assembly, world, workerId, { env: { EFFITAG_TIERS: '' } });
      try {
        await assert.rejects(fn.invoke({ Records: [] }), /environment variable EFFITAG_TIERS is not set/);
      } finally {
        await fn.stop();
      }
    } finally {
      await world.stop();
    }
  });
});
