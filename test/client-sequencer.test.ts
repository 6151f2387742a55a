// The client's sequencer on its own: no server, no socket, time moved by hand on a manual clock.
// Gaps, repeats, epochs, out-of-order arrival, skips, the gap timeout, and the server's answers.
import t from 'tap'
import type { Position, ResyncReason } from '../src/protocol.js'
import { Sequencer, type Numbered } from '../src/client/sequencer.js'
import { ManualClock } from './clock.js'

interface Item extends Numbered {
  name: string
}

function item (seq: number, epoch = 'e1'): Item {
  return { seq, epoch, skip: false, name: `${epoch}:${seq}` }
}

function skip (seq: number, epoch = 'e1'): Item {
  return { seq, epoch, skip: true, name: `skip ${epoch}:${seq}` }
}

interface Rig {
  sequencer: Sequencer<Item>
  clock: ManualClock
  /** Names of the items delivered, in order. */
  delivered: string[]
  fetches: number
  moves: number
  resyncs: ResyncReason[]
  /** What `waiting()` answers. */
  waiting: boolean
  /** Runs after each delivery, like an app handler. */
  onDeliver: (item: Item) => void
}

const GAP_WAIT_MS = 100

/** A sequencer with a recording host, starting at `from` when given. */
function rig (from?: Position): Rig {
  const clock = new ManualClock()
  const rig: Rig = {
    clock,
    delivered: [],
    fetches: 0,
    moves: 0,
    resyncs: [],
    waiting: false,
    onDeliver: () => {},
    sequencer: new Sequencer<Item>({
      clock,
      gapWaitMs: GAP_WAIT_MS,
      waiting: () => rig.waiting,
      deliver: (item) => {
        rig.delivered.push(item.name)
        rig.onDeliver(item)
      },
      fetch: () => { rig.fetches++ },
      moved: () => { rig.moves++ },
      resync: (reason) => { rig.resyncs.push(reason) }
    })
  }
  if (from !== undefined) rig.sequencer.restore(from)
  return rig
}

function receive (rig: Rig, ...items: Item[]): void {
  for (const one of items) rig.sequencer.receive(one)
}

/** The server's answer to a subscribe or a fetch sent with `since`: `replayed` arrives while it is due, then the answer. */
function answer (rig: Rig, position: Position | null, since: Position | undefined, replayed: Item[] = []): void {
  rig.waiting = true
  receive(rig, ...replayed)
  rig.waiting = false
  rig.sequencer.settle(position, { since, resynced: false })
}

t.test('in order from the position: each delivered at once, and the position follows', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  receive(r, item(1), item(2), item(3))
  t.same(r.delivered, ['e1:1', 'e1:2', 'e1:3'])
  t.same(r.sequencer.position, { seq: 3, epoch: 'e1' })
  t.equal(r.moves, 3, 'one move per item')
  t.equal(r.fetches, 0)
  t.equal(r.clock.pending, 0, 'no timer')
})

t.test('no position yet: the first event starts the log there; a skip alone starts nothing', async (t) => {
  const r = rig()
  t.ok(r.sequencer.idle)
  receive(r, skip(4))
  t.equal(r.sequencer.position, undefined)
  t.ok(r.sequencer.idle, 'nothing kept for a skip with no position')
  receive(r, item(7), item(8))
  t.same(r.delivered, ['e1:7', 'e1:8'])
  t.same(r.sequencer.position, { seq: 8, epoch: 'e1' })
})

t.test('repeats and events behind the position are dropped', async (t) => {
  const r = rig({ seq: 5, epoch: 'e1' })
  receive(r, item(4), item(5), item(6), item(6), item(5), item(7))
  t.same(r.delivered, ['e1:6', 'e1:7'])
  t.equal(r.fetches, 0)
})

t.test('out-of-order arrival: later events wait for the missing one, then all go in order', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  receive(r, item(3), item(2))
  t.same(r.delivered, [], 'nothing before seq 1')
  t.equal(r.clock.pending, 1, 'one gap timer for both')
  receive(r, item(3), item(1))
  t.same(r.delivered, ['e1:1', 'e1:2', 'e1:3'], 'each once, in seq order')
  t.equal(r.clock.pending, 0, 'the gap timer stops once the gap is closed')
  r.clock.advance(GAP_WAIT_MS * 2)
  t.equal(r.fetches, 0, 'no fetch for a gap that closed in time')
  t.same(r.sequencer.position, { seq: 3, epoch: 'e1' })
})

t.test('a missing seq that does not come in gapWaitMs: one fetch, the later events still held', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  receive(r, item(1), item(3), item(4), item(5))
  t.same(r.delivered, ['e1:1'])
  r.clock.advance(GAP_WAIT_MS - 1)
  t.equal(r.fetches, 0, 'not before gapWaitMs')
  r.clock.advance(1)
  t.equal(r.fetches, 1, 'fetched once gapWaitMs has passed')
  t.equal(r.clock.pending, 0)
  answer(r, { seq: 5, epoch: 'e1' }, { seq: 1, epoch: 'e1' }, [item(2)])
  t.same(r.delivered, ['e1:1', 'e1:2', 'e1:3', 'e1:4', 'e1:5'])
  t.same(r.resyncs, [])
})

t.test('a gap still open after a partial fill keeps waiting; the fetch comes at the first deadline', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  receive(r, item(2), item(4))
  r.clock.advance(GAP_WAIT_MS / 2)
  receive(r, item(1))
  t.same(r.delivered, ['e1:1', 'e1:2'], 'delivered up to the next gap')
  t.equal(r.clock.pending, 1, 'seq 3 is still awaited')
  r.clock.advance(GAP_WAIT_MS / 2)
  t.equal(r.fetches, 1)
})

t.test('an event of another epoch waits for the server and asks it (fetch), with no gap timer', async (t) => {
  const r = rig({ seq: 5, epoch: 'e1' })
  receive(r, item(1, 'e2'))
  t.same(r.delivered, [])
  t.equal(r.fetches, 1)
  t.equal(r.clock.pending, 0)
  t.same(r.sequencer.position, { seq: 5, epoch: 'e1' }, 'the position stands until the server answers')
})

t.test('epoch answer with a resync: the new epoch is the position, held events it covers are dropped', async (t) => {
  const r = rig({ seq: 5, epoch: 'e1' })
  receive(r, item(1, 'e2'), item(2, 'e2'))
  // the fetch is out: the server says resync (the app refetches), then answers where e2 stands
  r.waiting = true
  receive(r, item(6, 'e1'))
  r.sequencer.lose()
  t.equal(r.sequencer.position, undefined)
  r.waiting = false
  r.sequencer.settle({ seq: 2, epoch: 'e2' }, { since: { seq: 5, epoch: 'e1' }, resynced: true })
  t.same(r.sequencer.position, { seq: 2, epoch: 'e2' })
  t.same(r.delivered, [], 'covered by the refetch: neither the old epoch nor the held e2 events')
  receive(r, item(3, 'e2'))
  t.same(r.delivered, ['e2:3'], 'live again from the new position')
  t.same(r.resyncs, [], 'the resync itself is the server\'s, not the sequencer\'s')
})

t.test('a scope\'s first events start a new epoch: a continued position carries on into it', async (t) => {
  const r = rig({ seq: 0, epoch: 'empty' })
  receive(r, item(2, 'e1'))
  t.equal(r.fetches, 1)
  answer(r, { seq: 2, epoch: 'e1' }, { seq: 0, epoch: 'empty' }, [item(1, 'e1'), item(2, 'e1')])
  t.same(r.delivered, ['e1:1', 'e1:2'], 'each once, from the start of the new epoch')
  t.same(r.sequencer.position, { seq: 2, epoch: 'e1' })
  t.same(r.resyncs, [])
})

t.test('the answer is ahead of what was replayed: the position jumps and the app is told (gap)', async (t) => {
  const r = rig({ seq: 1, epoch: 'e1' })
  answer(r, { seq: 5, epoch: 'e1' }, { seq: 1, epoch: 'e1' }, [item(2), item(3)])
  t.same(r.delivered, ['e1:2', 'e1:3'])
  t.same(r.sequencer.position, { seq: 5, epoch: 'e1' })
  t.same(r.resyncs, ['gap'], 'never a silent gap')
})

t.test('answers that do not continue from `since`', async (t) => {
  t.test('a position ahead of the answer in the same epoch stays', async (t) => {
    const r = rig({ seq: 9, epoch: 'e1' })
    answer(r, { seq: 4, epoch: 'e1' }, undefined)
    t.same(r.sequencer.position, { seq: 9, epoch: 'e1' })
  })
  t.test('no since: the answer is where the scope starts', async (t) => {
    const r = rig()
    answer(r, { seq: 4, epoch: 'e1' }, undefined)
    t.same(r.sequencer.position, { seq: 4, epoch: 'e1' })
    receive(r, item(5))
    t.same(r.delivered, ['e1:5'])
  })
  t.test('no position in the answer: what was held is taken from the position as it is', async (t) => {
    const r = rig({ seq: 0, epoch: 'e1' })
    answer(r, null, { seq: 0, epoch: 'e1' }, [item(2), item(1)])
    t.same(r.delivered, ['e1:1', 'e1:2'])
  })
})

t.test('while an answer is due every event waits, in order or not; release hands them on', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  r.waiting = true
  receive(r, item(2), item(1), item(1), item(3))
  t.same(r.delivered, [])
  t.equal(r.clock.pending, 0, 'no gap timer while waiting')
  r.waiting = false
  r.sequencer.release()
  t.same(r.delivered, ['e1:1', 'e1:2', 'e1:3'])
})

t.test('skips move the position on and reach no one', async (t) => {
  t.test('in order', async (t) => {
    const r = rig({ seq: 0, epoch: 'e1' })
    receive(r, item(1), skip(2), item(3))
    t.same(r.delivered, ['e1:1', 'e1:3'])
    t.same(r.sequencer.position, { seq: 3, epoch: 'e1' })
  })
  t.test('a skip that arrives before the event it follows is held like one', async (t) => {
    const r = rig({ seq: 0, epoch: 'e1' })
    receive(r, skip(2), item(3))
    t.equal(r.clock.pending, 1)
    receive(r, item(1))
    t.same(r.delivered, ['e1:1', 'e1:3'])
    t.equal(r.clock.pending, 0)
    r.clock.advance(GAP_WAIT_MS)
    t.equal(r.fetches, 0)
  })
  t.test('a skip of another epoch fetches nothing, and still stands for its seq in the replay', async (t) => {
    const r = rig({ seq: 0, epoch: 'empty' })
    receive(r, skip(1, 'e1'))
    t.equal(r.fetches, 0, 'a skip alone fetches nothing')
    receive(r, item(2, 'e1'))
    t.equal(r.fetches, 1)
    // the replay hands seq 1 back: the skip held for it keeps it from the app
    answer(r, { seq: 2, epoch: 'e1' }, { seq: 0, epoch: 'empty' }, [item(1, 'e1'), item(2, 'e1')])
    t.same(r.delivered, ['e1:2'])
    t.same(r.sequencer.position, { seq: 2, epoch: 'e1' })
  })
})

t.test('the app acting from inside a delivery', async (t) => {
  t.test('asking for the scope again: the rest waits for that answer', async (t) => {
    const r = rig({ seq: 0, epoch: 'e1' })
    receive(r, item(2), item(3))
    r.onDeliver = (one) => { if (one.seq === 1) r.waiting = true }
    receive(r, item(1))
    t.same(r.delivered, ['e1:1'])
    r.waiting = false
    r.sequencer.release()
    t.same(r.delivered, ['e1:1', 'e1:2', 'e1:3'])
  })
  t.test('leaving the scope: nothing more is handed on', async (t) => {
    const r = rig({ seq: 0, epoch: 'e1' })
    receive(r, item(2), item(3))
    r.onDeliver = () => {
      r.sequencer.dropHeld()
      r.sequencer.lose()
    }
    receive(r, item(1))
    t.same(r.delivered, ['e1:1'])
    t.ok(r.sequencer.idle)
  })
  t.test('closing the client: halted, nothing more handed on, the position kept', async (t) => {
    const r = rig({ seq: 0, epoch: 'e1' })
    receive(r, item(2), item(3))
    r.onDeliver = () => { r.sequencer.halt() }
    receive(r, item(1))
    t.same(r.delivered, ['e1:1'])
    t.same(r.sequencer.position, { seq: 1, epoch: 'e1' })
    receive(r, item(2))
    r.sequencer.release()
    t.same(r.delivered, ['e1:1'], 'a halted sequencer takes nothing')
    t.equal(r.clock.pending, 0)
  })
})

t.test('lose and dropHeld leave nothing behind', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  receive(r, item(1), item(3))
  t.notOk(r.sequencer.idle)
  r.sequencer.lose()
  r.sequencer.dropHeld()
  t.ok(r.sequencer.idle, 'no position, nothing held')
  t.equal(r.clock.pending, 0, 'no timer')
  receive(r, item(9))
  t.same(r.delivered, ['e1:1', 'e1:9'], 'after a lost position the next event starts again')
})

t.test('stopGapTimer: an answer that covers the gap is on its way, so no fetch', async (t) => {
  const r = rig({ seq: 0, epoch: 'e1' })
  receive(r, item(2))
  r.sequencer.stopGapTimer()
  r.clock.advance(GAP_WAIT_MS * 2)
  t.equal(r.fetches, 0)
})
