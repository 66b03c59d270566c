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
      removeOnClose()
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
})
