// Validates XML files against an XSD with the JDK's own XML Schema 1.0 validator (Xerces, javax.xml.validation).
// Usage: java tests/helpers/XsdValidate.java SCHEMA.xsd FILE.xml [...]; exit 0 valid, 1 invalid (errors printed).
import java.io.File;
import javax.xml.XMLConstants;
import javax.xml.transform.stream.StreamSource;
import javax.xml.validation.SchemaFactory;
import javax.xml.validation.Validator;

public class XsdValidate {
    public static void main(String[] args) throws Exception {
        SchemaFactory factory = SchemaFactory.newInstance(XMLConstants.W3C_XML_SCHEMA_NS_URI);
        factory.setProperty(XMLConstants.ACCESS_EXTERNAL_SCHEMA, "");
        factory.setProperty(XMLConstants.ACCESS_EXTERNAL_DTD, "");
        Validator validator = factory.newSchema(new File(args[0])).newValidator();
        int bad = 0;
        for (int i = 1; i < args.length; i++) {
            try {
                validator.validate(new StreamSource(new File(args[i])));
                System.out.println("valid " + args[i]);
            } catch (org.xml.sax.SAXException | java.io.IOException e) {
                System.out.println("INVALID " + args[i] + ": " + e.getMessage());
                bad++;
            }
        }
        System.exit(bad == 0 ? 0 : 1);
    }
}
