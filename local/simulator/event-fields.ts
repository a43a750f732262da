import { EVENT_TYPES, type EventType } from '#shared/upstream/types.ts';
import { hash3, mix32, SALT, unmix32 } from './hash.ts';
import { uuid } from './uuid.ts';

/**
 * The fields of an event that depend on its key alone (id, type, name). The first 32 bits of an
 * id are a bijection of the key, so ids are unique and an id maps back to its key.
 */

/** The service's type totals for 3,000,000 events; the generator draws types in these proportions. */
export const TYPE_TOTALS: Readonly<Record<EventType, number>> = {
  page_view: 1_050_459,
  click: 749_415,
  api_call: 300_487,
  form_submit: 299_557,
  scroll: 150_594,
  purchase: 150_087,
  error: 149_884,
  video_play: 149_517,
};

const NAME_SPACE = 36 ** 6;

export interface EventFields {
  idOfKey(key: number): string;
  /** The key an id was made from, or null when the id is not one this generator makes for a key below `total`. */
  keyOfId(id: string, total: number): number | null;
  typeOfKey(key: number): EventType;
  nameOfKey(key: number): string;
}

/** `seed` is the data set's mixed seed. */
export function createEventFields(seed: number): EventFields {
  const idSeed = mix32((seed ^ SALT.eventId0) >>> 0);
  const typeEdges: number[] = [];
  {
    const all = Object.values(TYPE_TOTALS).reduce((a, b) => a + b, 0);
    let acc = 0;
    for (const t of EVENT_TYPES) {
      acc += TYPE_TOTALS[t];
      typeEdges.push(Math.floor((acc / all) * 4294967296));
    }
  }

  function idOfKey(key: number): string {
    return uuid(
      mix32((key ^ idSeed) >>> 0),
      hash3(seed, key, SALT.eventId1),
      hash3(seed, key, SALT.eventId2),
      hash3(seed, key, SALT.eventId3),
    );
  }

  return {
    idOfKey,
    keyOfId(id, total) {
      if (!/^[0-9a-f]{8}-/.test(id)) return null;
      const key = (unmix32(Number.parseInt(id.slice(0, 8), 16)) ^ idSeed) >>> 0;
      return key < total && idOfKey(key) === id ? key : null;
    },
    typeOfKey(key) {
      const h = hash3(seed, key, SALT.type);
      for (let t = 0; t < typeEdges.length; t++) if (h < typeEdges[t]!) return EVENT_TYPES[t]!;
      return EVENT_TYPES[EVENT_TYPES.length - 1]!;
    },
    nameOfKey(key) {
      return `event_${(hash3(seed, key, SALT.name) % NAME_SPACE).toString(36).padStart(6, '0')}`;
    },
  };
}
