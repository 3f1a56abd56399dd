/**
 * One list of deploy steps (cdk/deploy-steps.ts): the README's "Deploying (AWS)" command block is
 * what it renders, and each step's command runs a real CLI option (the rehearsal runs the same list).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { deploySteps, modelsOf, readmeDeployBlock, renderDeploySteps, withDeployBlock } from '../cdk/deploy-steps.ts';

const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');

describe('deploy steps: one list for the README and the rehearsal', () => {
  it("the README's deploy command block is exactly what the list renders (regenerate: node --import tsx scripts/deploy-steps.ts --write)", () => {
    assert.equal(readmeDeployBlock(readme), renderDeploySteps());
  });

  it('the order is deploy, fetch, publish, upload: the stack exists before weights are published', () => {
    assert.deepEqual(
      deploySteps().map((s) => s.id),
      ['deploy', 'fetch', 'publish', 'upload'],
    );
    for (const s of deploySteps()) assert.ok(s.standIn.length > 20, `${s.id} says what the rehearsal runs instead`);
  });

  it('the fetch step names every model of the tiers file, and publishing takes the whole tiers file', () => {
    const fetch = deploySteps()
      .find((s) => s.id === 'fetch')!
      .command.join(' ');
    for (const m of modelsOf('tiers/defaults.json')) assert.match(fetch, new RegExp(` ${m}[ ;]`), `${m} fetched`);
    const publish = deploySteps()
      .find((s) => s.id === 'publish')!
      .command.join(' ');
    assert.match(publish, /weights publish --tiers tiers\/defaults\.json /);
    // A custom model (examples/tiers: a phi 2.5 network) has no official weights to fetch.
    assert.doesNotMatch(deploySteps('examples/tiers/two-gpu-one-cpu.json').find((s) => s.id === 'fetch')!.command[0], /phi/);
  });

  it('a README whose block drifted is rewritten to the list, and nothing else in it changes', () => {
    const drifted = readme.replace(renderDeploySteps(), '# 1. Publish weights first\nnpx effitag weights publish …');
    assert.notEqual(readmeDeployBlock(drifted), renderDeploySteps());
    assert.equal(withDeployBlock(drifted), readme);
  });

  it('every option the steps pass exists in the CLI (effitag weights publish --help)', async () => {
    const { buildProgram } = await import('../cli/program.ts');
    const program = buildProgram();
    const publish = program.commands.find((c) => c.name() === 'weights')!.commands.find((c) => c.name() === 'publish')!;
    // Its own, and the program's (--stack, --region, --profile: which stack, for every command).
    const options = [...publish.options, ...program.options].map((o) => o.long);
    const used = deploySteps()
      .find((s) => s.id === 'publish')!
      .command.join(' ')
      .match(/--[a-z-]+/g)!;
    for (const o of used) assert.ok(options.includes(o), `weights publish has ${o} (has: ${options.join(' ')})`);
  });
});
