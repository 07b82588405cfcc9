"""The BFF: browsers hold one opaque HttpOnly session cookie; tokens stay here (DESIGN §3)."""
