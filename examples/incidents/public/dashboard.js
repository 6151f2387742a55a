// The incident dashboard: plain JS modules on the browser bundle of fastify-realtime/client
// (window.FastifyRealtime). It loads the incidents over HTTP once connected, then keeps them up to
// date from the events of the user's team scopes (an admin also follows incidents:all and every
// team), shows who else is looking at each team (presence), and says plainly when something is
// wrong: offline, missed updates that need a reload, an action that failed. view.js draws.
/* global FastifyRealtime */
import { $, avatar, cardElement, fillCard, flash, logActivity, renderBanner, renderPeople, renderViewers, teamElement } from './view.js'

const userId = new URLSearchParams(window.location.search).get('user')
const RANK = { open: 0, acknowledged: 1, resolved: 2 }

const people = new Map() // user id -> { id, name, role }
const incidents = new Map() // id -> incident (the highest version seen)
const sections = new Map() // team id -> { element, cards: Map<incident id, li> }
const expanded = new Set() // incidents whose notes are all shown
let me = null
let allTeams = [] // every team, for "move to"
let visibleTeams = [] // the teams this user sees
let touched = null // ids changed by events while a load is on its way
const problems = { offline: null, resync: false, error: null }

const nameOf = (id) => people.get(String(id))?.name ?? String(id)
/** Who did it, as the activity says it: "You" for this user's own changes, from any tab. */
const who = (id) => String(id) === userId ? 'You' : nameOf(id)
const teamName = (id) => allTeams.find((team) => team.id === id)?.name ?? id
const sees = (teamId) => me.role === 'admin' || visibleTeams.some((team) => team.id === teamId)

function setError (message) {
  problems.error = message
  renderBanner(problems)
}

// --- HTTP ---------------------------------------------------------------------------------

// DEMO ONLY: a real page gets its token from the app's own login.
let token = null
let tokenExp = 0
async function getToken () {
  if (token !== null && Date.now() / 1000 < tokenExp - 60) return token
  const res = await fetch(`/api/demo-token?user=${encodeURIComponent(userId)}`)
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).message ?? res.statusText)
  token = (await res.json()).token
  tokenExp = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).exp
  return token
}

async function api (method, path, body) {
  const headers = { authorization: `Bearer ${await getToken()}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  if (!res.ok) {
    const error = new Error((await res.json().catch(() => ({}))).message ?? res.statusText)
    error.status = res.status
    throw error
  }
  return res.status === 204 ? null : await res.json()
}

/**
 * Runs a button's request and shows the incident it answers at once (its event, which follows,
 * is then a repeat); a refusal (say, someone resolved it first) goes to the banner.
 */
function act (what, run, done) {
  run().then((incident) => {
    if (problems.error !== null) setError(null)
    if (incident !== undefined && upsert(incident)) logActivity({ at: Date.now() }, done(incident))
  }, (err) => setError(`Could not ${what}: ${err.message}`))
}

// --- the incidents ------------------------------------------------------------------------

/** Keeps the newest copy (an admin gets each change from a team and from incidents:all); true when it was new. */
function upsert (incident) {
  const known = incidents.get(incident.id)
  if (known !== undefined && known.version >= incident.version) return false
  touched?.add(incident.id)
  if (sees(incident.teamId)) incidents.set(incident.id, incident)
  else incidents.delete(incident.id)
  if (known !== undefined && known.teamId !== incident.teamId) renderTeam(known.teamId)
  renderTeam(incident.teamId, incident.id)
  return true
}

async function loadIncidents () {
  const mine = new Set()
  touched = mine
  try {
    const list = (await api('GET', '/api/incidents')).incidents
    const fresh = new Set(list.map((incident) => incident.id))
    for (const id of [...incidents.keys()]) if (!fresh.has(id) && !mine.has(id)) incidents.delete(id)
    for (const incident of list) {
      const known = incidents.get(incident.id)
      if (known === undefined || known.version <= incident.version) incidents.set(incident.id, incident)
    }
    for (const teamId of sections.keys()) renderTeam(teamId)
    problems.resync = false
    renderBanner(problems)
  } catch (err) {
    setError(`Could not load the incidents: ${err.message}`)
  } finally {
    if (touched === mine) touched = null
  }
}

function renderTeam (teamId, flashId) {
  const section = sections.get(teamId)
  if (section === undefined) return
  const list = [...incidents.values()].filter((incident) => incident.teamId === teamId)
    .sort((a, b) => (a.status === 'resolved') - (b.status === 'resolved') || a.severity.localeCompare(b.severity) ||
      RANK[a.status] - RANK[b.status] || b.createdAt - a.createdAt)
  for (const [id, li] of section.cards) {
    if (list.some((incident) => incident.id === id)) continue
    li.remove()
    section.cards.delete(id)
  }
  const ul = $('.incidents', section.element)
  for (const incident of list) {
    let li = section.cards.get(incident.id)
    if (li === undefined) section.cards.set(incident.id, li = card(incident))
    fillCard(li, incident, { names: nameOf, teams: allTeams, allNotes: expanded.has(incident.id) })
    ul.append(li)
    if (incident.id === flashId) flash(li)
  }
}

function teamSection (team) {
  const element = teamElement(team)
  const form = $('.declare', element)
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const title = form.elements.title.value.trim()
    if (title === '') return
    act(`declare “${title}”`, async () => {
      const incident = await api('POST', `/api/teams/${encodeURIComponent(team.id)}/incidents`, { title, severity: form.elements.severity.value })
      form.reset()
      return incident
    }, (incident) => `You declared “${incident.title}” for ${team.name}`)
  })
  sections.set(team.id, { element, cards: new Map() })
  return element
}

/** A card and its buttons; each acts on the incident as it is when clicked. */
function card (incident) {
  const li = cardElement(incident)
  const current = () => incidents.get(li.dataset.incidentId)
  li.addEventListener('click', (event) => {
    const action = event.target.closest('[data-action]')?.dataset.action
    const now = current()
    if (action === undefined || now === undefined) return
    if (action === 'acknowledge') {
      act(`acknowledge “${now.title}”`, () => api('POST', `/api/incidents/${now.id}/acknowledge`), (changed) => `You acknowledged “${changed.title}”`)
    } else if (action === 'resolve') {
      act(`resolve “${now.title}”`, () => api('POST', `/api/incidents/${now.id}/resolve`), (changed) => `You resolved “${changed.title}”`)
    } else if (action === 'edit') {
      const edit = $('.edit', li)
      edit.elements.title.value = now.title
      edit.elements.severity.value = now.severity
      edit.hidden = false
      edit.elements.title.focus()
    } else if (action === 'cancel') {
      $('.edit', li).hidden = true
    } else if (action === 'notes') {
      if (!expanded.delete(now.id)) expanded.add(now.id)
      renderTeam(now.teamId)
    }
  })
  $('.move', li).addEventListener('change', (event) => {
    const to = event.target.value
    const now = current()
    event.target.value = ''
    if (to === '' || now === undefined) return
    act(`move “${now.title}”`, () => api('POST', `/api/incidents/${now.id}/reassign`, { teamId: to }),
      (changed) => `You moved “${changed.title}” to ${teamName(to)}`)
  })
  $('.edit', li).addEventListener('submit', (event) => {
    event.preventDefault()
    const form = event.target
    const now = current()
    act(`edit “${now.title}”`, async () => {
      const changed = await api('PATCH', `/api/incidents/${now.id}`, { title: form.elements.title.value.trim(), severity: form.elements.severity.value })
      form.hidden = true
      return changed
    }, (changed) => `You edited “${changed.title}”`)
  })
  $('.note', li).addEventListener('submit', (event) => {
    event.preventDefault()
    const form = event.target
    const text = form.elements.text.value.trim()
    const now = current()
    if (text === '') return
    // the note arrives with its event, like anyone else's
    act(`add a note to “${now.title}”`, async () => {
      await api('POST', `/api/incidents/${now.id}/notes`, { text })
      form.reset()
    })
  })
  return li
}

// --- realtime -----------------------------------------------------------------------------

function connectLive () {
  const client = FastifyRealtime.connect(window.location.origin, {
    getToken: () => { token = null; return getToken() },
    io: { transports: ['websocket'] }
  })
  let loaded = false
  const offlineText = () => navigator.onLine
    ? 'Connection lost. Reconnecting… changes made meanwhile appear once it is back.'
    : 'You are offline. Changes made meanwhile appear once you are back online.'
  const labels = { connecting: 'Connecting…', connected: 'Live', reconnecting: 'Reconnecting…', disconnected: 'Offline' }
  client.onState((state) => {
    const pill = $('#conn')
    pill.dataset.state = state
    pill.textContent = labels[state]
    problems.offline = state === 'reconnecting' ? offlineText() : state === 'disconnected' ? 'Disconnected from the server. Reload the page to try again.' : null
    renderBanner(problems)
    if (state === 'connected' && !loaded) {
      loaded = true
      loadIncidents()
    }
  })
  for (const [event, offline] of [['offline', true], ['online', false]]) {
    window.addEventListener(event, () => {
      if (client.state !== 'connected') return
      problems.offline = offline ? offlineText() : null
      renderBanner(problems)
    })
  }
  // events that cannot be replayed: the list must be loaded again
  client.onResync(() => {
    problems.resync = true
    renderBanner(problems)
  })
  client.onError((err) => {
    if (client.state === 'connected') setError(`${err.message} (${err.code})`)
  })

  for (const team of visibleTeams) {
    client.onPresence(`team:${team.id}`, (presence) => renderViewers(sections.get(team.id).element, presence, userId))
  }
  if (me.role === 'admin') {
    // incidents:all for every change; each team too, to be present where she looks
    for (const scope of ['incidents:all', ...visibleTeams.map((team) => `team:${team.id}`)]) {
      client.subscribe(scope).catch((err) => setError(`Could not follow ${scope}: ${err.message}`))
    }
  }

  const changed = (verb) => ({ incident }, meta) => {
    if (upsert(incident)) logActivity(meta, `${who(meta.by)} ${verb} “${incident.title}”`)
  }
  client.on('incident:created', ({ incident }, meta) => {
    if (upsert(incident)) logActivity(meta, `${who(meta.by)} declared “${incident.title}” (${incident.severity.toUpperCase()}) for ${teamName(incident.teamId)}`)
  })
  client.on('incident:acknowledged', changed('acknowledged'))
  client.on('incident:resolved', changed('resolved'))
  client.on('incident:updated', changed('edited'))
  client.on('incident:reassigned', ({ incident, from, to }, meta) => {
    if (upsert(incident)) logActivity(meta, `${who(meta.by)} moved “${incident.title}” from ${teamName(from)} to ${teamName(to)}`)
  })
  client.on('incident:note_added', ({ incidentId, note, version }, meta) => {
    const known = incidents.get(incidentId)
    if (known === undefined) {
      // moved into one of this user's teams before the note: fetch it whole
      api('GET', `/api/incidents/${encodeURIComponent(incidentId)}`).then(upsert, () => {})
      return
    }
    if (known.version >= version) return
    upsert({ ...known, notes: [...known.notes, note], version })
    logActivity(meta, `${who(note.author)} noted on “${known.title}”: ${note.text}`)
  })
  // "declared 3 min ago" moves on
  setInterval(() => { for (const teamId of sections.keys()) renderTeam(teamId) }, 30_000)
}

// --- start --------------------------------------------------------------------------------

async function signIn () {
  $('#conn').hidden = true
  $('#login').hidden = false
  const res = await fetch('/api/demo-users')
  if (!res.ok) throw new Error(res.statusText)
  renderPeople((await res.json()).users)
}

async function start () {
  const [{ users }, mine, { teams }] = await Promise.all([
    fetch('/api/demo-users').then((res) => res.json()),
    api('GET', '/api/me'),
    api('GET', '/api/teams')
  ])
  for (const user of users) people.set(user.id, user)
  me = mine.user
  visibleTeams = mine.teams
  allTeams = teams
  $('#me').hidden = false
  $('#me-avatar').replaceWith(avatar(me, true))
  $('#me-name').textContent = me.name
  $('#me-role').textContent = me.role === 'admin' ? 'Admin · every team' : visibleTeams.map((team) => team.name).join(', ') || 'No team'
  $('#dashboard').hidden = false
  if (visibleTeams.length === 0) {
    const empty = document.createElement('div')
    empty.className = 'empty-state'
    empty.innerHTML = '<h2>You are not on a team yet</h2><p class="muted">Incidents appear here once an admin adds you to a team.</p>'
    $('#teams').replaceChildren(empty)
  } else {
    $('#teams').replaceChildren(...visibleTeams.map(teamSection))
  }
  connectLive()
}

$('#banner-action').addEventListener('click', () => {
  if (problems.offline === null && problems.resync) {
    loadIncidents()
    return
  }
  setError(null)
})

if (userId === null || userId === '') {
  signIn().catch((err) => setError(`Could not list the demo users: ${err.message}`))
} else {
  start().catch((err) => {
    $('#conn').dataset.state = 'disconnected'
    $('#conn').textContent = 'Offline'
    const unknown = err.status === 401 || err.status === 404
    setError(unknown ? `Cannot sign in as “${userId}”. Pick someone else.` : `The dashboard could not start: ${err.message}`)
    if (unknown) signIn().catch(() => {})
  })
}
