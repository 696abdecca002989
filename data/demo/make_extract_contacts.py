"""Generate the demo dataset: extract contact details from a message as one JSON object.

The base SmolLM2-135M-Instruct answers such requests with prose or loose, inconsistent JSON;
after a short LoRA run it answers with exactly this schema, `null` where a field is missing,
which makes a convincing before/after in the finish screen's "try it" prompt.

Run: python data/demo/make_extract_contacts.py  (writes extract_contacts.jsonl beside it)
"""

import json
import random
from pathlib import Path

FIRST = ["Maria", "James", "Aisha", "Kenji", "Lena", "Omar", "Sofia", "Lucas", "Priya", "Tomasz", "Chloe",
         "Mateo", "Ingrid", "Kwame", "Yuki", "Daniel", "Fatima", "Noah", "Elena", "Ravi", "Hannah", "Diego",
         "Amara", "Felix", "Zara", "Jonas", "Mei", "Samuel", "Leila", "Oskar", "Grace", "Arjun", "Nadia", "Victor"]
LAST = ["Lopez", "Carter", "Okafor", "Tanaka", "Fischer", "Haddad", "Rossi", "Silva", "Sharma", "Nowak",
        "Dubois", "Garcia", "Larsen", "Mensah", "Sato", "Kim", "Khan", "Becker", "Popescu", "Iyer", "Muller",
        "Fernandez", "Adeyemi", "Wagner", "Ali", "Berg", "Chen", "Osei", "Rahimi", "Lindqvist", "Moore"]
COMPANIES = ["Northwind Traders", "Blue Harbor Logistics", "Acme Robotics", "Greenleaf Farms", "Vertex Analytics",
             "Sunrise Dental", "Orbit Media", "Redwood Legal", "Cobalt Energy", "Maple & Finch Design",
             "Quantum Bakery", "Atlas Freight", "Pinecrest Clinic", "Lumen Software", "Harbor Books"]
CITIES = ["Madrid", "Chicago", "Lagos", "Osaka", "Berlin", "Beirut", "Milan", "Sao Paulo", "Pune", "Krakow",
          "Lyon", "Austin", "Oslo", "Accra", "Sapporo", "Seoul", "Karachi", "Hamburg", "Bucharest", "Chennai",
          "Toronto", "Nairobi", "Melbourne", "Dublin", "Lisbon"]
DOMAINS = ["example.com", "mail.example.org", "example.net"]
INSTRUCTIONS = [
    "Extract the contact details from the message as JSON.",
    "Return the sender's contact information as a JSON object.",
    "Pull out the name, email, phone, company and city as JSON.",
    "Read the message and give me the contact card in JSON.",
    "Convert this message into a JSON contact record.",
]


def phone(rng: random.Random) -> str:
    style = rng.randrange(3)
    digits = [rng.randrange(10) for _ in range(10)]
    d = "".join(map(str, digits))
    if style == 0:
        return f"+{rng.choice([1, 33, 34, 44, 49, 81, 91])} {d[:3]} {d[3:6]} {d[6:]}"
    if style == 1:
        return f"({d[:3]}) {d[3:6]}-{d[6:]}"
    return f"{d[:3]}-{d[3:6]}-{d[6:]}"


def message(rng: random.Random, c: dict) -> str:
    name, email, tel, company, city = c["name"], c["email"], c["phone"], c["company"], c["city"]
    at_company = f" at {company}" if company else ""
    from_city = f" in {city}" if city else ""
    contacts = " or ".join(x for x in (email, tel) if x)
    reach = f" You can reach me at {contacts}." if contacts else ""
    templates = [
        lambda: f"Hi, I'm {name}{at_company}{from_city}.{reach} Looking forward to hearing from you.",
        lambda: "\n".join(x for x in ["Best regards,", name, company, city, email, tel] if x),
        lambda: f"Voicemail from {name}{at_company}: please call back{(' on ' + tel) if tel else ''}."
                + (f" Email works too: {email}." if email else "") + (f" I'm based{from_city}." if city else ""),
        lambda: f"Thanks for the quote! -- {name}" + (f", {company}" if company else "")
                + (f" ({city})" if city else "") + (f" | {email}" if email else "") + (f" | {tel}" if tel else ""),
        lambda: f"New lead: {name}" + (f" works for {company}" if company else "")
                + (f", lives{from_city}" if city else "") + "." + (f" Contact: {contacts}." if contacts else ""),
    ]
    return rng.choice(templates)()


def make_rows(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        c = {
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}" if rng.random() < 0.8 else None,
            "phone": phone(rng) if rng.random() < 0.7 else None,
            "company": rng.choice(COMPANIES) if rng.random() < 0.6 else None,
            "city": rng.choice(CITIES) if rng.random() < 0.7 else None,
        }
        record = {k: c[k] for k in ("name", "email", "phone", "company", "city")}
        rows.append({
            "instruction": rng.choice(INSTRUCTIONS),
            "input": message(rng, c),
            "output": json.dumps(record, ensure_ascii=False),
        })
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("extract_contacts.jsonl")
    with open(out, "w", encoding="utf-8") as handle:
        for row in make_rows(400):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
