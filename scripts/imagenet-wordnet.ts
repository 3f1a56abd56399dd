/**
 * Generates model/tag-hierarchy.json: each ImageNet-1k class's WordNet 3.0 noun synset and the
 * ancestors worth searching by (golden retriever → retriever → sporting dog → dog → … → animal),
 * from WordNet itself (Debian's `wordnet-base`, /usr/share/wordnet/data.noun). The output is
 * committed, so nothing at run time or in CI needs WordNet.
 *
 *   node --import tsx scripts/imagenet-wordnet.ts [--wordnet /usr/share/wordnet] [--check]
 *
 * Matching, and the checks that make the generator fail:
 * 1. a label's synonyms ("great white shark, white shark, man-eater, …") must all be lemmas of the
 *    synset (case-insensitive; spaces are underscores in WordNet);
 * 2. the class index is the order of the sorted WordNet ids, so the chosen offsets must rise
 *    strictly with the index — candidates that cannot fit between their neighbours are dropped;
 * 3. no class is an ancestor of another (ILSVRC's classes are leaves of its tree);
 * 4. what is still ambiguous after 1–3 (a single polysemous name: abacus, crane, monitor …) must be
 *    settled by scripts/imagenet-wordnet-choices.json, reviewed by hand with each synset's gloss;
 *    a choice that is not a remaining candidate, or a choice for a label that needs none, fails.
 *
 * `--check` regenerates in memory and fails if the committed file differs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import labels from '../model/imagenet-labels.json' with { type: 'json' };
import { TAG_RULE, type TagHierarchyFile } from '../model/tag-rule.ts';

const OUT = fileURLToPath(new URL('../model/tag-hierarchy.json', import.meta.url));
const CHOICES = fileURLToPath(new URL('./imagenet-wordnet-choices.json', import.meta.url));

interface Synset {
  offset: string;
  lexFile: number;
  lemmas: string[];
  /** Hypernyms and instance hypernyms. */
  parents: string[];
  gloss: string;
}

/** data.noun: `offset lex_filenum ss_type w_cnt(hex) (word lex_id)… p_cnt (sym offset pos src/tgt)… | gloss`. */
export function parseDataNoun(text: string): Map<string, Synset> {
  const synsets = new Map<string, Synset>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith(' ')) continue; // licence header lines start with two spaces
    const [fields, gloss = ''] = line.split(' | ');
    const f = fields.trim().split(' ');
    const words = Number.parseInt(f[3], 16);
    const lemmas = Array.from({ length: words }, (_, i) => f[4 + 2 * i].replace(/\(.*\)$/, ''));
    let at = 4 + 2 * words;
    const pointers = Number(f[at++]);
    const parents: string[] = [];
    for (let i = 0; i < pointers; i++, at += 4) if (f[at] === '@' || f[at] === '@i') parents.push(f[at + 1]);
    synsets.set(f[0], { offset: f[0], lexFile: Number(f[1]), lemmas, parents, gloss: gloss.trim() });
  }
  return synsets;
}

/** WordNet's lexicographer file of its abstract upper level (entity, object, matter, abstraction …). */
const NOUN_TOPS = 3;

const norm = (s: string) => s.trim().toLowerCase().replace(/ /g, '_');

function ancestorsOf(synsets: Map<string, Synset>, offset: string): Set<string> {
  const seen = new Set<string>();
  const stack = [...(synsets.get(offset)?.parents ?? [])];
  while (stack.length) {
    const o = stack.pop()!;
    if (seen.has(o)) continue;
    seen.add(o);
    stack.push(...(synsets.get(o)?.parents ?? []));
  }
  return seen;
}

type Choices = Record<string, { offset: string; why: string }>;
/** Labels whose spelling differs from WordNet's lemmas ("jelly fish" is WordNet's `jellyfish`). */
type Spellings = Record<string, { lemmas: string[]; why: string }>;

/** Each label's synset offset, or an error listing every label that fails a check. */
export function matchLabels(
  synsets: Map<string, Synset>,
  names: readonly string[],
  { choices, spellings }: { choices: Choices; spellings: Spellings },
): string[] {
  const byLemma = new Map<string, string[]>();
  for (const s of synsets.values())
    for (const l of new Set(s.lemmas.map((x) => x.toLowerCase()))) byLemma.set(l, [...(byLemma.get(l) ?? []), s.offset]);
  const problems: string[] = [];
  // 1. all synonyms are lemmas of the synset
  let candidates = names.map((label, i) => {
    const words = (spellings[String(i)]?.lemmas ?? label.split(',')).map(norm);
    const sets = words.map((w) => new Set(byLemma.get(w) ?? []));
    const found = [...sets[0]].filter((o) => sets.every((s) => s.has(o))).sort();
    if (!found.length) problems.push(`${i} "${label}": no noun synset has all of ${words.join(', ')} as lemmas`);
    return found;
  });
  if (problems.length) throw new Error(`WordNet matching failed:\n  ${problems.join('\n  ')}`);
  // 2 and 3, to a fixed point: offsets rise with the index; no class is an ancestor of a settled one.
  for (let changed = true; changed; ) {
    changed = false;
    const lo: string[] = [];
    const hi: string[] = [];
    for (let i = 0; i < candidates.length; i++) lo[i] = candidates[i].find((o) => i === 0 || o > lo[i - 1]) ?? '99999999';
    for (let i = candidates.length - 1; i >= 0; i--)
      hi[i] = [...candidates[i]].reverse().find((o) => i === candidates.length - 1 || o < hi[i + 1]) ?? '00000000';
    const settledAncestors = new Set<string>();
    for (const c of candidates) if (c.length === 1) for (const a of ancestorsOf(synsets, c[0])) settledAncestors.add(a);
    candidates = candidates.map((c, i) => {
      const kept = c.filter((o) => o >= lo[i] && o <= hi[i] && (c.length === 1 || !settledAncestors.has(o)));
      if (kept.length !== c.length) changed = true;
      return kept;
    });
  }
  // 4. the reviewed choices settle the rest
  const chosen = candidates.map((c, i) => {
    const choice = choices[String(i)];
    if (c.length === 0) problems.push(`${i} "${names[i]}": no candidate fits the index order`);
    else if (c.length === 1 && choice) problems.push(`${i} "${names[i]}": has one candidate; remove its choice`);
    else if (c.length > 1 && !choice)
      problems.push(
        `${i} "${names[i]}": ambiguous, add a choice:\n      ${c.map((o) => `${o} ${synsets.get(o)!.gloss.slice(0, 90)}`).join('\n      ')}`,
      );
    else if (choice && !c.includes(choice.offset)) problems.push(`${i} "${names[i]}": choice ${choice.offset} is not among ${c.join(' ')}`);
    return choice?.offset ?? c[0];
  });
  for (const k of [...Object.keys(choices), ...Object.keys(spellings)])
    if (!(Number(k) in names)) problems.push(`entry for unknown class ${k}`);
  for (let i = 1; i < chosen.length; i++)
    if (!(chosen[i] > chosen[i - 1])) problems.push(`${i} "${names[i]}": offset ${chosen[i]} does not rise after ${chosen[i - 1]}`);
  const all = new Set(chosen);
  chosen.forEach((o, i) => {
    for (const a of ancestorsOf(synsets, o)) if (all.has(a)) problems.push(`${i} "${names[i]}": class ${a} is its ancestor`);
  });
  if (problems.length) throw new Error(`WordNet matching failed:\n  ${problems.join('\n  ')}`);
  return chosen;
}

/** The hierarchy: for each class, the ancestors kept by TAG_RULE (see model/tag-hierarchy.ts), most specific first. */
export function buildHierarchy(synsets: Map<string, Synset>, offsets: readonly string[]): TagHierarchyFile {
  const ancestors = offsets.map((o) => ancestorsOf(synsets, o));
  const classesOf = new Map<string, number[]>();
  ancestors.forEach((set, i) => {
    for (const a of set) classesOf.set(a, [...(classesOf.get(a) ?? []), i]);
  });
  const maxClasses = Math.floor(TAG_RULE.maxShare * offsets.length);
  const keepTops = new Set<string>(TAG_RULE.keepTopLevel.map((w) => w.slice(1)));
  const dropped = new Set<string>(TAG_RULE.drop.map((w) => w.slice(1)));
  let kept = [...classesOf.keys()].filter((o) => {
    const n = classesOf.get(o)!.length;
    if (n < TAG_RULE.minClasses || n > maxClasses || dropped.has(o)) return false;
    return synsets.get(o)!.lexFile !== NOUN_TOPS || keepTops.has(o);
  });
  // Of ancestors holding exactly the same classes, the nearest one says it all (vertebrate, not chordate).
  const sameAs = (a: string, b: string) => classesOf.get(a)!.join() === classesOf.get(b)!.join();
  kept = kept.filter((o) => !kept.some((d) => d !== o && sameAs(o, d) && ancestorsOf(synsets, d).has(o)));
  // Tags in a stable order: most classes first, then by offset; a class's tags most specific first.
  const count = (o: string) => classesOf.get(o)!.length;
  kept.sort((a, b) => count(b) - count(a) || (a < b ? -1 : 1));
  const index = new Map(kept.map((o, i) => [o, i]));
  return {
    source: 'WordNet 3.0 (Debian wordnet-base, data.noun), generated by scripts/imagenet-wordnet.ts',
    rule: TAG_RULE,
    classes: offsets.map((o, i) => ({
      wnid: `n${o}`,
      tags: [...ancestors[i]]
        .filter((a) => index.has(a))
        .map((a) => index.get(a)!)
        .sort((a, b) => b - a),
    })),
    tags: kept.map((o) => ({
      wnid: `n${o}`,
      name: synsets.get(o)!.lemmas[0].replace(/_/g, ' '),
      classes: count(o),
      gloss: synsets.get(o)!.gloss.split(';')[0].trim(),
    })),
  };
}

export type Reviewed = { choices: Choices; spellings: Spellings };
export const reviewedChoices = (): Reviewed => JSON.parse(readFileSync(CHOICES, 'utf8'));

export function generate(wordnetDir: string, reviewed: Reviewed = reviewedChoices()): TagHierarchyFile {
  const synsets = parseDataNoun(readFileSync(join(wordnetDir, 'data.noun'), 'utf8'));
  return buildHierarchy(synsets, matchLabels(synsets, labels, reviewed));
}

/** Compare with the published ILSVRC class index (`{"0": ["n01440764", "tench"], …}`), where one is at hand. */
export function compareWithClassIndex(hierarchy: TagHierarchyFile, classIndex: Record<string, [string, string]>): string[] {
  return hierarchy.classes.flatMap((c, i) =>
    classIndex[String(i)]?.[0] === c.wnid ? [] : [`${i} ${labels[i]}: generated ${c.wnid}, published ${classIndex[String(i)]?.[0]}`],
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const opts = new Command()
    .option('--wordnet <dir>', 'folder holding data.noun', '/usr/share/wordnet')
    .option('--check', 'fail if the committed file differs from a fresh generation')
    .option('--against <file>', 'also compare every class with a published imagenet_class_index.json')
    .parse()
    .opts<{ wordnet: string; check?: boolean; against?: string }>();
  try {
    const hierarchy = generate(opts.wordnet);
    if (opts.against) {
      const differences = compareWithClassIndex(hierarchy, JSON.parse(readFileSync(opts.against, 'utf8')));
      if (differences.length) throw new Error(`differs from ${opts.against}:\n  ${differences.join('\n  ')}`);
      console.log(`all 1000 classes agree with ${opts.against}`);
    }
    const text = `${JSON.stringify(hierarchy)}\n`;
    if (opts.check) {
      // Compared as data: the committed file is Biome-formatted.
      if (!isDeepStrictEqual(JSON.parse(readFileSync(OUT, 'utf8')), hierarchy))
        throw new Error(`${OUT} is not what the generator makes now; rerun without --check`);
      console.log('tag hierarchy: up to date');
    } else {
      writeFileSync(OUT, text);
      console.log(`wrote ${OUT}`);
    }
  } catch (err) {
    console.error((err as Error).message);
    process.exit(1);
  }
}
