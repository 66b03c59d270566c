// Progressive enhancement only: every page works without this file.
document.addEventListener('DOMContentLoaded', () => {
  for (const dialog of document.querySelectorAll('dialog[data-modal]')) {
    // Rendered open so it shows without JavaScript; made modal here so focus stays inside it.
    // close() queues one close event of its own: only the one after it means the user closed it,
    // and then the key leaves the page, so that afterwards only its prefix is visible.
    const removeOnClose = () => dialog.addEventListener('close', () => dialog.remove(), { once: true })
    if (dialog.open) {
      dialog.close()
      dialog.addEventListener('close', removeOnClose, { once: true })
      dialog.showModal()
    } else {
      // Always rendered open: closed already, by a user quicker than this script.
      dialog.remove()
    }
  }
  for (const button of document.querySelectorAll('[data-copy]')) {
    button.addEventListener('click', async () => {
      const target = document.getElementById(button.dataset.copy)
      const status = button.closest('dialog')?.querySelector('.copied')
      try {
        await navigator.clipboard.writeText(target.textContent)
        if (status) status.textContent = 'Copied to the clipboard.'
      } catch {
        const range = document.createRange()
        range.selectNodeContents(target)
        getSelection().removeAllRanges()
        getSelection().addRange(range)
        if (status) status.textContent = 'Selected: press Ctrl+C to copy.'
      }
    })
  }
  const importForm = document.getElementById('import-form')
  if (importForm) followImports(importForm)
})

/** Sends the chosen file as the request body and shows the job's progress until it is done. */
function followImports(form) {
  const panel = document.getElementById('import-progress')
  const stage = document.getElementById('import-stage')
  const bar = document.getElementById('import-bar')
  const counts = document.getElementById('import-counts')
  const failures = document.getElementById('import-failures')
  const describe = (job) =>
    `${job.rows_read} rows: ${job.created} created, ${job.updated} updated, ${job.unchanged} unchanged, ${job.failed} failed`
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const file = form.elements.file.files[0]
    if (!file) return
    const button = form.querySelector('button[type=submit]')
    button.disabled = true
    panel.hidden = false
    failures.hidden = true
    stage.textContent = `Uploading ${file.name}…`
    bar.removeAttribute('value')
    counts.textContent = ''
    const query = new URLSearchParams({
      delimiter: form.elements.delimiter.value,
      dry_run: form.elements.dry_run.checked ? 'true' : 'false',
      file_name: file.name,
    })
    try {
      const sent = await fetch(`/settings/import?${query}`, {
        method: 'POST',
        headers: { 'content-type': 'text/csv', 'x-csrf-token': form.dataset.csrf },
        body: file,
      })
      const answer = await sent.json().catch(() => {
        throw new Error(`the server answered ${sent.status}`)
      })
      if (!sent.ok) {
        const detail = Array.isArray(answer.detail)
          ? answer.detail.map((d) => d.msg).join('; ')
          : answer.detail
        throw new Error(detail)
      }
      let job = answer.job
      while (job.status === 'queued' || job.status === 'running') {
        stage.textContent = `${job.dry_run ? 'Dry run of' : 'Importing'} ${file.name}: ${Math.floor((job.bytes_read / job.bytes) * 100)}%`
        bar.value = job.bytes > 0 ? job.bytes_read / job.bytes : 0
        counts.textContent = describe(job)
        await new Promise((resolve) => setTimeout(resolve, 400))
        job = (await (await fetch(`/settings/import/${job.id}`)).json()).job
      }
      bar.value = 1
      stage.textContent =
        job.status === 'completed'
          ? `${job.dry_run ? 'Dry run of' : 'Imported'} ${file.name}: done`
          : `Import of ${file.name} failed: ${job.error}`
      counts.textContent = describe(job)
      if (job.failed > 0) {
        failures.querySelector('a').href = `/settings/import/${job.id}/failures`
        failures.hidden = false
      }
    } catch (error) {
      stage.textContent = `The import was refused: ${error.message}`
      bar.value = 0
    } finally {
      button.disabled = false
    }
  })
}
