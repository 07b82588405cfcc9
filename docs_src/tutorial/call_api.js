// In the browser's console on http://localhost:8000/, logged in: ask the notes API who you are, through the BFF.
await fetch("/api/notes/me", { headers: { "X-CSRF": "1" } }).then((response) => response.json())
