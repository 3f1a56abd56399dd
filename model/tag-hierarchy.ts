/**
 * ImageNet-1k's tag hierarchy: each class's WordNet 3.0 synset and the ancestors worth searching by,
 * so a search for "dog" finds all 118 breeds and "vehicle" every car, truck and boat. The table is
 * generated from WordNet by scripts/imagenet-wordnet.ts and committed (model/tag-hierarchy.json).
 */
import hierarchyFile from './tag-hierarchy.json' with { type: 'json' };
import { IMAGENET_LABELS } from './labels.ts';
import type { TagHierarchyFile } from './tag-rule.ts';

export { TAG_RULE, type TagHierarchyFile } from './tag-rule.ts';

export const TAG_HIERARCHY = hierarchyFile as TagHierarchyFile;

/** How a tag is written and searched: lower case, `_`, `-` and runs of spaces as one space. */
export function normalizeTag(tag: string): string {
  return tag
    .toLowerCase()
    .replace(/[\s_-]+/g, ' ')
    .trim();
}

/** A class's tag: its label's first synonym ("golden retriever"), as metadata write-back names it. */
export const leafTag = (label: string): string => normalizeTag(label.split(',')[0]);

const classesByLeaf = new Map<string, number[]>();
IMAGENET_LABELS.forEach((label, i) => {
  const tag = leafTag(label);
  classesByLeaf.set(tag, [...(classesByLeaf.get(tag) ?? []), i]);
});

/** The rolled-up tags of an ImageNet class, most specific first. */
export function ancestorTags(classIndex: number): string[] {
  return (TAG_HIERARCHY.classes[classIndex]?.tags ?? []).map((t) => normalizeTag(TAG_HIERARCHY.tags[t].name));
}

export interface ScoredTag {
  tag: string;
  probability: number;
  /** A class's own tag (a leaf), or one rolled up from the leaves under it. */
  leaf: boolean;
}

/**
 * Leaf tags and rolled-up tags of one image. A rolled-up tag's probability is the sum of the
 * probabilities of the image's leaf tags under it (a lower bound of the model's mass on it, the same
 * whether computed at inference or later from written metadata). A leaf is identified by its class
 * index when known, else by its name; a name two classes share (crane, maillot) rolls up only to the
 * tags both have. Models other than ImageNet-1k (custom labels) have leaf tags only.
 */
export function scoreTags(
  predictions: readonly { label: string; probability: number; index?: number }[],
  options: { imagenet: boolean },
): ScoredTag[] {
  const scores = new Map<string, ScoredTag>();
  const add = (tag: string, probability: number, leaf: boolean) => {
    const s = scores.get(tag);
    if (s) {
      s.probability = Math.min(1, s.probability + probability);
      s.leaf ||= leaf;
    } else scores.set(tag, { tag, probability, leaf });
  };
  for (const p of predictions) {
    const leaf = leafTag(p.label);
    add(leaf, p.probability, true);
    if (!options.imagenet) continue;
    const classes = p.index !== undefined ? [p.index] : (classesByLeaf.get(leaf) ?? []);
    const sets = classes.map((c) => new Set(ancestorTags(c)));
    const common = sets.length ? [...sets[0]].filter((t) => sets.every((s) => s.has(t))) : [];
    for (const t of common) if (t !== leaf) add(t, p.probability, false);
  }
  return [...scores.values()].map((s) => ({ ...s, probability: Math.round(s.probability * 1000) / 1000 }));
}

export interface TagSuggestion {
  tag: string;
  /** ImageNet classes under it (1 for a leaf). */
  classes: number;
  gloss?: string;
}

let suggestions: TagSuggestion[] | undefined;

/** Tags starting with (then containing) `text`, broadest first: what a search box offers. */
export function suggestTags(text: string, limit = 10): TagSuggestion[] {
  suggestions ??= [
    ...TAG_HIERARCHY.tags.map((t) => ({ tag: normalizeTag(t.name), classes: t.classes, gloss: t.gloss })),
    ...[...classesByLeaf.keys()].map((tag) => ({ tag, classes: 1 })),
  ]
    .filter((s, i, all) => all.findIndex((o) => o.tag === s.tag) === i)
    .sort((a, b) => b.classes - a.classes || a.tag.localeCompare(b.tag));
  const q = normalizeTag(text);
  if (!q) return suggestions.slice(0, limit);
  const starts = suggestions.filter((s) => s.tag.startsWith(q) || s.tag.includes(` ${q}`));
  const contains = suggestions.filter((s) => !starts.includes(s) && s.tag.includes(q));
  return [...starts, ...contains].slice(0, limit);
}

/** How many classes a tag covers (the query planner starts from the most specific tag). */
let breadths: Map<string, number> | undefined;

export function tagBreadth(tag: string): number {
  breadths ??= (() => {
    const m = new Map<string, number>();
    for (const x of TAG_HIERARCHY.tags) m.set(normalizeTag(x.name), (m.get(normalizeTag(x.name)) ?? 0) + x.classes);
    for (const [leaf, classes] of classesByLeaf) m.set(leaf, classes.length);
    return m;
  })();
  return breadths.get(normalizeTag(tag)) ?? 1;
}
