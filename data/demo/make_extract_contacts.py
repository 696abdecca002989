"""Generate the demo dataset: extract contact details from a message as one JSON object.

The base SmolLM2-135M-Instruct answers such requests with prose or loose, inconsistent JSON; after
a short LoRA run it answers with exactly this schema, `null` where a field is missing, which makes a
convincing before/after. For the tuned model to handle messages it has not seen, the messages vary
the way real ones do: first-person notes, signature blocks, labelled fields in any order, third-person
call notes, e-mail headers, terse one-liners and texts; names from many places, companies named
after people (so a company is not taken for a name), e-mail addresses of several shapes, phone
numbers as people write them. Every value in a record appears verbatim in its message.

`contacts_heldout.jsonl` beside it is hand-written, not generated: messages in other wordings, with
names, companies and cities that this generator never uses (it reads the file and drops every word
of them from its pools; `lora-tui eval RUN_DIR --data data/demo/contacts_heldout.jsonl` scores a run).

Measured with every default (95 steps, chat template, lr 1e-3), exact record, base -> tuned, on the
eval split / the held-out file: the first 400-row set (65 first names, 66 cities, 10 layouts)
0 -> 19 of 20 / 0 -> 26 of 40 (65 %), the misses copy errors on unseen names ("Ringo Reid" for
"Callum Reid") and places; this set (three times the names and cities, invented brands, shops named
kind-first, companies named after places, dotted country domains, three more layouts) 0 -> 17 of 20 /
0 -> 33 of 40 (82 %), the same training time.

Run: python data/demo/make_extract_contacts.py [ROWS]  (writes extract_contacts.jsonl beside it)
"""

import json
import random
import re
import sys
from pathlib import Path

ROWS = 400
FIELDS = ("name", "email", "phone", "company", "city")

FIRST = ["Maria", "James", "Aisha", "Kenji", "Lena", "Omar", "Sofia", "Lucas", "Priya", "Tomasz", "Chloe", "Mateo",
         "Ingrid", "Kwame", "Yuki", "Daniel", "Fatima", "Noah", "Elena", "Ravi", "Hannah", "Diego", "Amara", "Felix",
         "Zara", "Jonas", "Mei", "Samuel", "Leila", "Oskar", "Grace", "Arjun", "Nadia", "Victor", "Isabel", "Tariq",
         "Astrid", "Joao", "Keiko", "Rosa", "Dmitri", "Esther", "Kofi", "Lucia", "Hugo", "Alina", "Sven", "Nia",
         "Pablo", "Mira", "Ethan", "Olivia", "Ahmed", "Chiara", "Bruno", "Layla", "Rui", "Tanvi", "Erin", "Marcus",
         "Sara", "Ivan", "Noor", "Theo", "Adaeze", "Luca", "Camille", "Raj", "Agnes", "Emre", "Lin", "Paula"]
LAST = ["Lopez", "Carter", "Okafor", "Tanaka", "Fischer", "Haddad", "Rossi", "Silva", "Sharma", "Nowak", "Dubois",
        "Garcia", "Larsen", "Mensah", "Sato", "Kim", "Khan", "Becker", "Popescu", "Iyer", "Muller", "Fernandez",
        "Adeyemi", "Wagner", "Ali", "Berg", "Chen", "Osei", "Rahimi", "Lindqvist", "Moore", "Petersen", "Yilmaz",
        "Novak", "Costa", "Walsh", "Nakamura", "Bauer", "Santos", "Ivanova", "Murphy", "Kowalski", "Eriksen",
        "Mbeki", "Da Silva", "Van Dijk", "O'Neill", "Smith-Jones", "Gupta", "Hoffmann", "Moreau", "Jensen", "Reyes",
        "Park", "Abubakar", "Schneider", "Romero", "Lambert", "Quinn", "Horvat", "Ferreira", "Nguyen", "Kaur"]
CITIES = ["Madrid", "Chicago", "Lagos", "Osaka", "Berlin", "Beirut", "Milan", "Sao Paulo", "Pune", "Krakow", "Lyon",
          "Austin", "Oslo", "Accra", "Sapporo", "Seoul", "Karachi", "Hamburg", "Bucharest", "Chennai", "Toronto",
          "Nairobi", "Melbourne", "Dublin", "Lisbon", "New York", "Cape Town", "Rio de Janeiro", "Kuala Lumpur",
          "Vienna", "Zurich", "Manila", "Lima", "Bogota", "Denver", "Glasgow", "Rotterdam", "Antwerp", "Helsinki",
          "Warsaw", "Istanbul", "Casablanca", "Tunis", "Johannesburg", "Singapore", "Jakarta", "Hanoi", "Bangalore",
          "Montreal", "Vancouver", "Boston", "Phoenix", "Brisbane", "Wellington", "Marseille", "Seville", "Munich",
          "Copenhagen", "Riga", "Budapest", "Belgrade", "Sofia", "Nicosia", "Doha", "Muscat", "Addis Ababa"]
# Companies: many are named after people, so "Carter" in "Carter & Sons" is not the sender's name.
COMPANY_WORDS = ["Northwind", "Blue Harbor", "Acme", "Greenleaf", "Vertex", "Sunrise", "Orbit", "Redwood", "Cobalt",
                 "Quantum", "Pinecrest", "Lumen", "Silverline", "Oakridge", "Bright Star", "Ironbridge", "Clearwater",
                 "Summit", "Golden Gate", "Riverside", "Evergreen", "Blackstone", "Nova", "Polaris", "Horizon",
                 "Crescent", "Maple & Finch", "Falcon", "Tidewater", "Granite", "Copperfield", "Willow"]
COMPANY_KINDS = ["Traders", "Logistics", "Robotics", "Farms", "Analytics", "Dental", "Media", "Legal", "Energy",
                 "Design", "Bakery", "Freight", "Clinic", "Software", "Books", "Consulting", "Builders", "Foods",
                 "Textiles", "Studio", "Labs", "Insurance", "Motors", "Pharmacy", "Architects", "Printing", "Hotels"]
SUFFIXES = ["", "", "", " Ltd", " Inc.", " GmbH", " LLC", " Group", " & Co.", " S.A.", " AB", " Pty Ltd"]
ROLES = ["Sales Manager", "Office Manager", "Founder", "CEO", "Head of Procurement", "Account Executive",
         "Project Lead", "Marketing Director", "Operations Manager", "Buyer", "Owner", "Partner", "Recruiter"]
FREE_MAIL = ["gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com", "gmx.net", "mail.com", "example.com",
             "example.org", "example.net"]
TLDS = ["com", "com", "net", "io", "co.uk", "de", "fr", "es", "it", "nl", "ca", "com.au", "co"]
# More names, places and company shapes than any one message needs: a 135M model copies a value it has
# never seen only if training made it copy, not recall (measured: the first 400-row set, 65 names,
# left the tuned model misspelling unseen names and cities in the held-out file: "Ringo Reid").
FIRST += ["Aiko", "Bilal", "Carmen", "Dario", "Eun-ji", "Farah", "Goran", "Helga", "Ikechukwu", "Jana", "Kaito",
          "Leandro", "Malak", "Nikolai", "Orla", "Pita", "Qasim", "Rania", "Stellan", "Thandiwe", "Umar", "Valeria",
          "Wanjiru", "Xavier", "Yusuf", "Zofia", "Anders", "Bongani", "Cyrus", "Dagny", "Emeka", "Fiona", "Giulia",
          "Hamza", "Irina", "Joaquin", "Kalani", "Ludmila", "Mohammed", "Nasrin", "Otto", "Pooja", "Ruairi", "Saoirse",
          "Tiago", "Uma", "Vikram", "Wiremu", "Ximena", "Yara", "Zeynep", "Abebe", "Benedikt", "Catalina", "Deepak",
          "Elif", "Farid", "Gabriela", "Haruto", "Ifeoma", "Jaroslav", "Kirra", "Lars", "Mariam", "Nkechi", "Oren",
          "Parisa", "Radu", "Shreya", "Tatiana", "Ugo", "Vesna", "Wojciech", "Yohannes", "Zainab", "Anouk", "Bashir",
          "Cosmin", "Dolores", "Eero", "Fenna", "Gideon", "Hiroshi", "Ilse", "Jasper", "Khadija", "Lorenzo", "Magnus",
          "Nomvula", "Olamide", "Pilar", "Rohan", "Siobhan", "Teodor", "Ulla", "Valentin", "Wren", "Yannick", "Zhiwei"]
LAST += ["Abiodun", "Bjornsson", "Castillo", "Dimitrov", "Esposito", "Fontana", "Gonzaga", "Halvorsen", "Ikeda",
         "Jovanovic", "Kariuki", "Leclerc", "Mahlangu", "Nakashima", "Oyelaran", "Pereira", "Quispe", "Rasmussen",
         "Sokolov", "Takahashi", "Udeh", "Valdivia", "Wisniewski", "Xu", "Yamamoto", "Zielinski", "Achterberg",
         "Balogun", "Cernik", "Delacroix", "Ekstrom", "Friedman", "Gallagher", "Horvath", "Ishikawa", "Jankowski",
         "Kovacs", "Lindholm", "Marchetti", "Nwosu", "Ortega", "Pham", "Qureshi", "Rinaldi", "Sandoval", "Thorsen",
         "Uchenna", "Vasquez", "Whitaker", "Yeo", "Zapata", "Andersson", "Bianchi", "Chowdhury", "Dlamini", "Engel",
         "Ferrari", "Grabowski", "Hakimi", "Ilunga", "Jaramillo", "Kuznetsov", "Lombardi", "Mwangi", "Nieminen",
         "Obi", "Petrovic", "Rahman", "Sorensen", "Tran", "Urquhart", "Varga", "Wu", "Yadav", "Zhou", "El-Amin",
         "Al-Rashid", "McAllister", "De Luca", "St. Clair", "Ben-David", "Van der Berg", "MacLeod"]
CITIES += ["Cordoba", "Valparaiso", "Arequipa", "Quito", "Medellin", "Guadalajara", "Monterrey", "Curitiba", "Recife",
           "Montevideo", "Asuncion", "Havana", "Kingston", "San Juan", "Halifax", "Calgary", "Ottawa", "Winnipeg",
           "Portland", "Atlanta", "Nashville", "Detroit", "Pittsburgh", "Minneapolis", "Sacramento", "Honolulu",
           "Reykjavik", "Tromso", "Aarhus", "Malmo", "Uppsala", "Tampere", "Tartu", "Vilnius", "Kaunas", "Lviv",
           "Odesa", "Brno", "Bratislava", "Ljubljana", "Zagreb", "Split", "Sarajevo", "Skopje", "Tirana",
           "Thessaloniki", "Plovdiv", "Cluj-Napoca", "Debrecen", "Graz", "Salzburg", "Basel", "Geneva", "Lausanne",
           "Strasbourg", "Nantes", "Toulouse", "Lille", "Nice", "Bilbao", "Malaga", "Granada", "Zaragoza", "Braga",
           "Faro", "Genoa", "Bologna", "Palermo", "Florence", "Verona", "Utrecht", "Eindhoven", "Ghent", "Bruges",
           "Leipzig", "Dresden", "Cologne", "Nuremberg", "Bremen", "Hanover", "Aberdeen", "Cardiff", "Belfast",
           "Galway", "Limerick", "Bristol", "Manchester", "Nottingham", "Oxford", "Tangier", "Fez", "Oran",
           "Alexandria", "Luxor", "Khartoum", "Kampala", "Kigali", "Dar es Salaam", "Mombasa", "Lusaka", "Harare",
           "Maputo", "Windhoek", "Durban", "Abuja", "Ibadan", "Kano", "Douala", "Bamako", "Abidjan", "Lome",
           "Cotonou", "Jeddah", "Riyadh", "Kuwait City", "Manama", "Tehran", "Isfahan", "Tashkent", "Almaty",
           "Tbilisi", "Yerevan", "Baku", "Lahore", "Dhaka", "Kathmandu", "Colombo", "Kochi", "Hyderabad", "Jaipur",
           "Ahmedabad", "Chiang Mai", "Bangkok", "Phnom Penh", "Da Nang", "Cebu", "Surabaya", "Bandung", "Penang",
           "Taipei", "Kaohsiung", "Busan", "Daegu", "Fukuoka", "Nagoya", "Kobe", "Yokohama", "Sendai", "Shenzhen",
           "Chengdu", "Wuhan", "Xi'an", "Ulaanbaatar", "Adelaide", "Hobart", "Darwin", "Canberra", "Christchurch",
           "Dunedin", "Suva", "Apia"]
COMPANY_WORDS += ["Zephyr", "Kinetic", "Meridian", "Harbourside", "Saltmarsh", "Amber", "Juniper", "Highland",
                  "Coral Reef", "Ember", "Northstar", "Sierra", "Lakeshore", "Bluebird", "Citadel", "Atlas", "Mosaic"]
COMPANY_KINDS += ["Coffee", "Optics", "Furniture", "Catering", "Brewery", "Shipping", "Security", "Garden Centre",
                  "Realty", "Veterinary", "Fitness", "Cycles", "Apparel"]
# Shop names with the kind in front, as many languages write them ("Studio Rossi").
KIND_FIRST = ["Studio", "Casa", "Atelier", "Maison", "Bodega", "Clinica", "Taller", "Haus", "Villa", "Agence",
              "Cafe", "Hotel", "Farmacia", "Boulangerie", "Trattoria", "Garage"]
SYLLABLES = (["Zen", "Kal", "Mar", "Vel", "Tor", "Lum", "Bri", "Cor", "Dex", "Fal", "Nor", "Qui", "Rav", "Syn", "Tek",
              "Ver", "Xan", "Ori", "Alt", "Ovi"],
             ["trix", "ora", "ion", "ex", "ara", "ino", "ent", "ly", "os", "ica", "um", "aro", "is", "eon", "via"])
TLDS += ["co.il", "co.ke", "co.jp", "com.br", "co.za", "co.nz", "com.mx", "com.tr", "co.in", "ie", "pl", "se", "no",
         "ch", "at", "be", "pt", "gr", "cz", "sg", "ae", "ma", "ng", "cl", "eg", "org"]

INSTRUCTIONS = [
    "Extract the contact details from the message as JSON.",
    "Return the sender's contact information as a JSON object.",
    "Pull out the name, email, phone, company and city as JSON.",
    "Read the message and give me the contact card in JSON.",
    "Convert this message into a JSON contact record.",
    "Extract name, email, phone, company and city from this text. Answer in JSON.",
    "Turn the following message into a contact record (JSON).",
    "Who is this and how do I reach them? Reply with a JSON contact.",
    "Fill in the contact JSON from this message; use null for anything missing.",
    "Parse the contact information below into JSON.",
]
FILLERS = ["I'd like a quote for 200 units.", "Following up on our call yesterday.", "Are you free for a chat next week?",
           "We met at the trade fair in spring.", "Please send over the brochure.", "Thanks for the quick reply!",
           "Could you confirm the delivery date?", "The invoice is attached.", "Happy to discuss the details.",
           "Let me know what works for you.", "I have a question about my order.", "Looking forward to working together."]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def company_name(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.12:  # an invented brand, alone or with its trade, sometimes in CamelCase
        brand = rng.choice(SYLLABLES[0]) + rng.choice(SYLLABLES[1])
        return rng.choice([brand, f"{brand} {rng.choice(COMPANY_KINDS)}", brand + rng.choice(["Tech", "Craft", "Path", "Works"])])
    if kind < 0.22:
        return f"{rng.choice(KIND_FIRST)} {rng.choice(LAST)}"
    if kind < 0.3:  # named after a place: the city inside it is still the company's name
        return f"{rng.choice(CITIES)} {rng.choice(COMPANY_KINDS)}"
    if kind < 0.5:
        last = rng.choice(LAST)
        return rng.choice([f"{last} & Sons", f"{last} Partners", f"{last} Consulting", f"{last} & {rng.choice(LAST)}",
                           f"{last} {rng.choice(COMPANY_KINDS)}"])
    return f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)}{rng.choice(SUFFIXES)}"


def email_address(rng: random.Random, first: str, last: str, company) -> str:
    f, s = slug(first), slug(last)
    local = rng.choice([f"{f}.{s}", f"{f}.{s}", f"{f[0]}.{s}", f"{f}", f"{f}{s}", f"{f}_{s}", f"{s}.{f}",
                        f"{f}{rng.randrange(10, 99)}", f"{f[0]}{s}", f"{f}.{s[0]}", f"{f}-{s}"])
    if company and rng.random() < 0.6:
        words = [w for w in re.split(r"[^A-Za-z0-9]+", company) if w and w.lower() not in ("ltd", "inc", "gmbh", "llc", "co", "sa", "ab", "pty")]
        domain = f"{slug(''.join(words[:2]))}.{rng.choice(TLDS)}"
    else:
        domain = rng.choice(FREE_MAIL)
    return f"{local}@{domain}"


# Digit groups as phone numbers are written around the world, national and international.
PHONE_GROUPS = [(3, 3, 4), (3, 3, 4), (4, 3, 4), (3, 4), (4, 4), (3, 3, 3), (2, 2, 2, 2, 2), (2, 4, 4), (4, 6),
                (5, 6), (3, 2, 2, 2), (2, 3, 3, 3), (1, 4, 4), (3, 3, 2, 2), (4, 3, 3)]


def phone_number(rng: random.Random) -> str:
    groups = rng.choice(PHONE_GROUPS)
    parts = ["".join(str(rng.randrange(10)) for _ in range(n)) for n in groups]
    if rng.random() < 0.3:
        parts[0] = "0" + parts[0][1:]  # a national trunk prefix
    sep = rng.choice([" ", " ", "-", ".", " "])
    if rng.random() < 0.25 and len(parts) >= 3:
        number = f"({parts[0]}) {parts[1]}-{'-'.join(parts[2:])}"
    else:
        number = sep.join(parts)
    if rng.random() < 0.35:
        code = rng.choice([1, 7, 20, 27, 31, 33, 34, 39, 41, 44, 46, 47, 48, 49, 52, 55, 61, 65, 81, 82, 90, 91, 234, 254, 351, 353, 420, 971])
        number = f"+{code}{rng.choice([' ', '-', ' '])}{number.lstrip('0(').replace(')', '')}"
    return number


# -- message layouts ----------------------------------------------------------------------------------

def first_person(rng, c) -> str:
    name, company, city = c["name"], c["company"], c["city"]
    greeting = rng.choice(["Hi,", "Hello,", "Hi there!", "Good afternoon,", "Dear team,", "Hey,", "Good morning!", ""])
    if city and rng.random() < 0.15:
        greeting, city = rng.choice([f"Greetings from {city}!", f"Hello from {city}!", f"Hi from sunny {city},"]), None
    parts = [greeting]
    intro = rng.choice([f"I'm {name}", f"This is {name}", f"My name is {name}", f"{name} here", f"It's {name}"])
    if company:
        intro += rng.choice([f" from {company}", f" at {company}", f" with {company}", f", {rng.choice(ROLES).lower()} at {company}",
                             f" and I work for {company}", f" of {company}", f" and I run {company}",
                             f", {rng.choice(ROLES).lower()} of {company}"])
    if city and rng.random() < 0.5:
        intro += rng.choice([f" in {city}", f" based in {city}", f", writing from {city}", f" ({city})"])
        city = None
    if parts[0].endswith(",") and not intro.startswith(name):
        intro = intro[0].lower() + intro[1:]  # "Hi, this is ..."
    parts.append(intro + ".")
    if rng.random() < 0.5:
        parts.append(rng.choice(FILLERS))
    if city:
        parts.append(rng.choice([f"I'm based in {city}.", f"I live in {city}.", f"Our office is in {city}.", f"I'm in {city} this month.",
                                 f"I moved to {city} recently.", f"I'm writing from our {city} office.", f"I'm in {city} until Friday."]))
    parts.append(contact_sentence(rng, c["email"], c["phone"]))
    parts.append(rng.choice(["Thanks!", "Cheers.", "Best wishes.", "Talk soon.", ""]))
    return " ".join(p for p in parts if p)


def contact_sentence(rng, email, phone) -> str:
    if email and phone:
        return rng.choice([f"You can reach me at {email} or {phone}.", f"My email is {email} and my number is {phone}.",
                           f"Email: {email}, phone: {phone}.", f"Call {phone} or write to {email}.",
                           f"Best to text me on {phone}; email {email} also works."])
    if email:
        return rng.choice([f"My email is {email}.", f"Drop me a line at {email}.", f"You can reach me at {email}.",
                           f"Please reply to {email}."])
    if phone:
        return rng.choice([f"Call me on {phone}.", f"My number is {phone}.", f"Text me at {phone}.", f"Phone: {phone}."])
    return ""


def signature(rng, c) -> str:
    lines = [c["name"]]
    if c["company"]:
        if rng.random() < 0.4:
            lines.append(f"{rng.choice(ROLES)}, {c['company']}")
        else:
            lines.append(c["company"])
    elif rng.random() < 0.3:
        lines.append(rng.choice(ROLES))
    if c["city"]:
        lines.append(c["city"])
    contact = []
    if c["phone"]:
        contact.append(rng.choice(["", "Tel: ", "Phone: ", "Mobile: ", "M: ", "T: "]) + c["phone"])
    if c["email"]:
        contact.append(rng.choice(["", "Email: ", "E: ", "Mail: "]) + c["email"])
    rng.shuffle(contact)
    opener = [rng.choice(FILLERS), ""] if rng.random() < 0.5 else []
    sign = rng.choice(["Best regards,", "Kind regards,", "Cheers,", "Thanks,", "--", "Regards,", "Sincerely,"])
    return "\n".join(opener + [sign] + lines + contact)


def labelled(rng, c) -> str:
    labels = {"name": ["Name", "Full name", "Contact"], "email": ["Email", "E-mail", "Mail"],
              "phone": ["Phone", "Tel", "Mobile"], "company": ["Company", "Organisation", "Employer"],
              "city": ["City", "Location", "Town"]}
    items = [(k, c[k]) for k in FIELDS if c[k]]
    rng.shuffle(items)
    if items[0][0] != "name" and rng.random() < 0.5:
        items.sort(key=lambda kv: kv[0] != "name")
    sep = rng.choice([" | ", "; ", "\n", ", "])
    return sep.join(f"{rng.choice(labels[k])}: {v}" for k, v in items)


def third_person(rng, c) -> str:
    name, company, city, email, phone = (c[k] for k in ("name", "company", "city", "email", "phone"))
    pronoun = rng.choice(["She", "He", "They"])
    head = rng.choice([f"New lead: {name}", f"Spoke with {name}", f"Call from {name}", f"Meeting notes: met {name}",
                       f"Referral: {name}", f"Customer {name} got in touch", f"Enquiry from {name}", f"Message from {name}"])
    if company and city and rng.random() < 0.4:
        head += f" ({company}, {city})"
        company = city = None
    elif company:
        head += rng.choice([f" from {company}", f" of {company}", f" ({company})", f", who works for {company}"])
        company = None
    text = head + "."
    if city:
        text += rng.choice([f" {pronoun} {'are' if pronoun == 'They' else 'is'} based in {city}.", f" Lives in {city}.", f" Location: {city}."])
    if email or phone:
        both = " or ".join(x for x in (email, phone) if x)
        text += rng.choice([f" Contact: {both}.", f" Reach {name.split()[0]} at {both}.", f" Follow up via {both}."])
    if rng.random() < 0.4:
        text += " " + rng.choice(["Wants a demo.", "Asked about pricing.", "Call back on Monday.", "Interested in the premium plan."])
    return text


def email_header(rng, c) -> str:
    if not c["email"]:
        return first_person(rng, c)
    subject = rng.choice(["Quote request", "Meeting", "Re: your offer", "Order question", "Partnership", "Hello"])
    body = [rng.choice(["Hello,", "Hi,", "Dear all,"]), rng.choice(FILLERS)]
    where = " ".join(x for x in (f"We are {c['company']}." if c["company"] else "", f"I'm in {c['city']}." if c["city"] else "") if x)
    if where:
        body.append(where)
    if c["phone"]:
        body.append(rng.choice([f"Call me on {c['phone']}.", f"My direct line is {c['phone']}."]))
    return f"From: {c['name']} <{c['email']}>\nSubject: {subject}\n\n" + " ".join(body)


def terse(rng, c) -> str:
    items = [c[k] for k in FIELDS if c[k]]
    first = items.pop(0)
    rng.shuffle(items)
    sep = rng.choice([", ", " / ", " - ", " | "])
    return rng.choice(["", "Contact: ", "Card: ", "FYI "]) + sep.join([first, *items])


def text_message(rng, c) -> str:
    name, phone = c["name"], c["phone"]
    start = f"SMS from {phone}: " if phone and rng.random() < 0.5 else ""
    body = rng.choice([f"hi it's {name}", f"hey, {name} here", f"this is {name}"])
    if c["company"]:
        body += f" from {c['company']}"
    if c["city"]:
        body += rng.choice([f", I'm in {c['city']}", f", back in {c['city']} now"])
    if c["email"]:
        body += f". send it to {c['email']}"
    if phone and not start:
        body += f". call me {phone}"
    return start + body + rng.choice(["", " thx", " :)", "!"])


def voicemail(rng, c) -> str:
    text = f"Voicemail from {c['name']}" + (f" at {c['company']}" if c["company"] else "") + ": please call back"
    text += f" on {c['phone']}." if c["phone"] else "."
    if c["email"]:
        text += f" Email works too: {c['email']}."
    if c["city"]:
        text += f" Based in {c['city']}."
    return text


def company_first(rng, c) -> str:
    if not c["company"]:
        return third_person(rng, c)
    text = c["company"] + (rng.choice([f", {c['city']}", f" ({c['city']})", f" - {c['city']}"]) if c["city"] else "") + ". "
    text += rng.choice([f"Ask for {c['name']}.", f"Contact person: {c['name']}.", f"Your contact: {c['name']}."])
    contact = [x for x in (c["phone"], c["email"]) if x]
    rng.shuffle(contact)
    return text + "".join(f" {x}." if rng.random() < 0.5 else f" {rng.choice(['Tel', 'Mail', 'Write to', 'Call'])}: {x}." for x in contact)


def signed_note(rng, c) -> str:
    """A short note signed at the end with a dash or a sign-off on the same line."""
    parts = [rng.choice(FILLERS + ["Sorry I missed your call.", "Got your message.", "Quick one:"])]
    if c["company"]:
        parts.append(rng.choice([f"We at {c['company']} would like to help.", f"I'm with {c['company']} now.",
                                 f"{c['company']} is interested."]))
    if c["city"]:
        parts.append(rng.choice([f"I'm in {c['city']} all week.", f"Back in {c['city']} on Tuesday.", f"Visiting {c['city']} soon."]))
    parts.append(contact_sentence(rng, c["email"], c["phone"]))
    sign = rng.choice([f"- {c['name']}", f"-- {c['name']}", f"Cheers, {c['name']}", f"Regards, {c['name']}", f"({c['name']})",
                       f"Thanks, {c['name']}"])
    return " ".join(p for p in parts if p) + rng.choice([" ", "\n"]) + sign


def one_line_signature(rng, c) -> str:
    items = [c[k] for k in ("name", "company", "city", "phone", "email") if c[k]]
    return rng.choice([rng.choice(FILLERS) + "\n\n", ""]) + rng.choice([" | ", " · ", " / "]).join(items)


def quoted_reply(rng, c) -> str:
    day = rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "12 March", "3 June", "yesterday"])
    intro = rng.choice([f"On {day}, {c['name']} wrote:", f"{c['name']} wrote on {day}:", f"Forwarded message from {c['name']}:"])
    body = [rng.choice(FILLERS)]
    if c["company"]:
        body.append(rng.choice([f"I represent {c['company']}.", f"Our firm, {c['company']}, needs a supplier."]))
    if c["city"]:
        body.append(rng.choice([f"We are located in {c['city']}.", f"Delivery would be to {c['city']}."]))
    body.append(contact_sentence(rng, c["email"], c["phone"]))
    return intro + "\n> " + " ".join(p for p in body if p)


LAYOUTS = [first_person, first_person, signature, labelled, third_person, email_header, terse, text_message, voicemail,
           company_first, signed_note, one_line_signature, quoted_reply]


def make_contact(rng: random.Random) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = company_name(rng) if rng.random() < 0.6 else None
    return {
        "name": f"{first} {last}",
        "email": email_address(rng, first, last, company) if rng.random() < 0.75 else None,
        "phone": phone_number(rng) if rng.random() < 0.65 else None,
        "company": company,
        "city": rng.choice(CITIES) if rng.random() < 0.65 else None,
    }


def held_out_words() -> set[str]:
    """Every word of the held-out file's names, companies and cities: the generator never uses them, so
    the held-out score measures messages about people and places the model was not trained on."""
    words = set()
    path = Path(__file__).with_name("contacts_heldout.jsonl")
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(json.loads(line)["output"])
        for key in ("name", "company", "city"):
            words.update(re.findall(r"[A-Za-z']+", record[key] or ""))
    return words


def without_held_out(pool: list[str], banned: set[str]) -> list[str]:
    return sorted({x for x in pool if not set(re.findall(r"[A-Za-z']+", x)) & banned}, key=pool.index)


def make_rows(n: int, seed: int = 7) -> list[dict]:
    global FIRST, LAST, CITIES, COMPANY_WORDS, COMPANY_KINDS, KIND_FIRST
    banned = held_out_words() - {"Hotel", "Sons"}  # trade words every set has
    FIRST, LAST, CITIES = (without_held_out(p, banned) for p in (FIRST, LAST, CITIES))
    COMPANY_WORDS, KIND_FIRST = without_held_out(COMPANY_WORDS, banned), without_held_out(KIND_FIRST, banned)
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        c = make_contact(rng)
        message = rng.choice(LAYOUTS)(rng, c)
        if any(c[k] and c[k] not in message for k in FIELDS):
            continue  # every value must be in the message as written
        rows.append({
            "instruction": rng.choice(INSTRUCTIONS),
            "input": message,
            "output": json.dumps({k: c[k] for k in FIELDS}, ensure_ascii=False),
        })
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("extract_contacts.jsonl")
    with open(out, "w", encoding="utf-8") as handle:
        for row in make_rows(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
