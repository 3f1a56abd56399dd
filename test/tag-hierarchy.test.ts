/**
 * The committed ImageNet → WordNet tag hierarchy (model/tag-hierarchy.json): its checks hold for all
 * 1,000 classes, a few chains are pinned, and rolled-up scores add up. Where Debian's WordNet is
 * installed, the committed file is also regenerated and compared.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { IMAGENET_LABELS } from '../model/labels.ts';
import { ancestorTags, normalizeTag, scoreTags, suggestTags, TAG_HIERARCHY, tagBreadth } from '../model/tag-hierarchy.ts';

const classOf = (first: string) => IMAGENET_LABELS.findIndex((l) => l.split(',')[0] === first);

describe('ImageNet tag hierarchy (WordNet 3.0)', () => {
  it('maps all 1,000 classes to distinct WordNet ids that rise with the class index', () => {
    const wnids = TAG_HIERARCHY.classes.map((c) => c.wnid);
    assert.equal(wnids.length, 1000);
    for (const w of wnids) assert.match(w, /^n\d{8}$/);
    for (let i = 1; i < wnids.length; i++) assert.ok(wnids[i] > wnids[i - 1], `${i}: ${wnids[i]} after ${wnids[i - 1]}`);
    // Well-known ids: golden retriever is n02099601, tench n01440764 (the first class), toilet tissue n15075141 (the last).
    assert.equal(TAG_HIERARCHY.classes[classOf('golden retriever')].wnid, 'n02099601');
    assert.equal(wnids[0], 'n01440764');
    assert.equal(wnids[999], 'n15075141');
  });

  it('pins the chains of a dog breed, a car and a fish, most specific first', () => {
    assert.deepEqual(ancestorTags(classOf('golden retriever')), [
      'retriever',
      'sporting dog',
      'hunting dog',
      'dog',
      'domestic animal',
      'canine',
      'carnivore',
      'placental',
      'mammal',
      'vertebrate',
      'animal',
    ]);
    assert.deepEqual(ancestorTags(classOf('sports car')), [
      'car',
      'motor vehicle',
      'self propelled vehicle',
      'wheeled vehicle',
      'vehicle',
      'conveyance',
      'container',
    ]);
    assert.deepEqual(ancestorTags(classOf('goldfish')), ['cyprinid', 'soft finned fish', 'teleost fish', 'fish', 'vertebrate', 'animal']);
  });

  it('keeps the rule: no tag too broad or too narrow, no uninformative top, and "dog" holds exactly the 118 breeds', () => {
    const max = Math.floor(TAG_HIERARCHY.rule.maxShare * 1000);
    for (const t of TAG_HIERARCHY.tags) assert.ok(t.classes >= 2 && t.classes <= max, `${t.name}: ${t.classes}`);
    const names = new Set(TAG_HIERARCHY.tags.map((t) => t.name));
    for (const top of ['entity', 'physical entity', 'object', 'whole', 'artifact', 'organism', 'abstraction', 'instrumentality'])
      assert.ok(!names.has(top), top);
    const dogs = TAG_HIERARCHY.classes.map((_, i) => i).filter((i) => ancestorTags(i).includes('dog'));
    assert.equal(dogs.length, 118);
    // ILSVRC's dog classes are the contiguous block from Chihuahua to Mexican hairless.
    assert.deepEqual([dogs[0], dogs.at(-1)], [classOf('Chihuahua'), classOf('Mexican hairless')]);
    assert.equal(tagBreadth('dog'), 118);
  });

  it('rolls leaf probabilities up: siblings add, a shared name rolls up only to what both classes share', () => {
    const scored = scoreTags(
      [
        { label: 'golden retriever', probability: 0.6, index: classOf('golden retriever') },
        { label: 'Labrador retriever', probability: 0.3, index: classOf('Labrador retriever') },
        { label: 'tabby, tabby cat', probability: 0.05, index: classOf('tabby') },
      ],
      { imagenet: true },
    );
    const p = (t: string) => scored.find((s) => s.tag === t)?.probability;
    assert.equal(p('golden retriever'), 0.6);
    assert.equal(p('retriever'), 0.9);
    assert.equal(p('dog'), 0.9);
    assert.equal(p('carnivore'), 0.95); // dogs and the cat
    assert.equal(p('tabby'), 0.05);
    assert.equal(scored.find((s) => s.tag === 'dog')?.leaf, false);
    // By name alone (as written in metadata): the same roll-up as by index.
    const byName = scoreTags([{ label: 'golden_retriever', probability: 0.6 }], { imagenet: true });
    assert.equal(byName.length, 12);
    // "crane" is a bird (134) and a machine (517): no ancestor is shared, so only the leaf.
    assert.deepEqual(scoreTags([{ label: 'crane', probability: 0.7 }], { imagenet: true }), [
      { tag: 'crane', probability: 0.7, leaf: true },
    ]);
    // Custom models have leaf tags only.
    assert.deepEqual(scoreTags([{ label: 'Golden Retriever', probability: 0.7 }], { imagenet: false }), [
      { tag: 'golden retriever', probability: 0.7, leaf: true },
    ]);
  });

  it('normalises tags and suggests the broadest first', () => {
    assert.equal(normalizeTag('  Sporting_Dog '), 'sporting dog');
    assert.equal(normalizeTag('self-propelled  vehicle'), 'self propelled vehicle');
    assert.deepEqual(
      suggestTags('dog', 3).map((s) => s.tag),
      ['dog', 'hunting dog', 'working dog'],
    );
    assert.ok(suggestTags('retriev').some((s) => s.tag === 'golden retriever'));
  });

  const wordnet = '/usr/share/wordnet/data.noun';
  // Without WordNet these two are skipped with a message; with CI=true (as .ci/run sets it, after
  // installing Debian's wordnet-base) a missing WordNet fails them instead of skipping them silently.
  const haveWordnet = existsSync(wordnet);
  const skipWithoutWordnet = haveWordnet || process.env.CI === 'true' ? false : `${wordnet} missing (apt install wordnet-base)`;
  const requireWordnet = () =>
    assert.ok(haveWordnet, `CI=true and no WordNet at ${wordnet}: .ci/run installs Debian's wordnet-base (apt install wordnet-base)`);
  it('is what the generator makes from WordNet 3.0 now', { skip: skipWithoutWordnet }, () => {
    requireWordnet();
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/imagenet-wordnet.ts', '--check'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /up to date/);
  });

  it('fails without a reviewed choice, with a choice that is not a candidate, and on a published id that differs', {
    skip: skipWithoutWordnet,
  }, async () => {
    requireWordnet();
    const { generate, reviewedChoices, compareWithClassIndex } = await import('../scripts/imagenet-wordnet.ts');
    const reviewed = reviewedChoices();
    const { '398': abacus, ...rest } = reviewed.choices;
    assert.equal(abacus.offset, '02666196');
    assert.throws(() => generate('/usr/share/wordnet', { ...reviewed, choices: rest }), /398 "abacus": ambiguous[\s\S]*02666347/);
    assert.throws(
      () => generate('/usr/share/wordnet', { ...reviewed, choices: { ...rest, '398': { offset: '02099601', why: 'wrong' } } }),
      /398 "abacus": choice 02099601 is not among 02666196 02666347/,
    );
    assert.throws(() => generate('/usr/share/wordnet', { ...reviewed, spellings: {} }), /107 "jelly fish": no noun synset/);
    const published = Object.fromEntries(TAG_HIERARCHY.classes.map((c, i) => [String(i), [c.wnid, ''] as [string, string]]));
    assert.deepEqual(compareWithClassIndex(TAG_HIERARCHY, published), []);
    published['398'] = ['n02666347', 'abacus'];
    assert.deepEqual(compareWithClassIndex(TAG_HIERARCHY, published), ['398 abacus: generated n02666196, published n02666347']);
  });
});
